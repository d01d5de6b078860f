"""Idefics3 (SmolVLM's architecture): docs/METHOD.md invariants 1-5, the vision span, the image-token count check,
and lineage against the real SmolVLM / SmolLM2 / Idefics3 / Llama 3.1 configs.

The student runs in train mode with reentrant gradient checkpointing, as swift trains it. The batch has two
images in row 0 (8 tiles), a text-only row 1 and one image in row 2 (3 tiles), right-padded, laid out as swift's
template does. transformers' Idefics3 batches rows with different tile counts (all-zero padding tiles, which the
model drops), so this is the 3-row batch of the FamilyCase contract; only swift's collator cannot (see e2e).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import Idefics3Config, LlamaConfig

from swift_lingudistill.families import family_for, lineage_of
from swift_lingudistill.families.idefics3 import Idefics3Family
from swift_lingudistill.teacher import LineageError, check_lineage
from tests.support.cases.idefics3 import NAME, SAMPLES, idefics3_case, make_idefics3_batch, swift_prompt
from tests.support.tiny.idefics3 import (
    IDEFICS3_TOKEN_IDS,
    TOKENS_PER_TILE,
    idefics3_tokenizers,
    make_idefics3_processor,
)

IMAGE_ID = IDEFICS3_TOKEN_IDS["<image>"]
FAKE_ID = IDEFICS3_TOKEN_IDS["<fake_token_around_image>"]


@pytest.fixture(scope="module")
def tokenizers():
    return idefics3_tokenizers()  # (teacher, student)


@pytest.fixture(scope="module")
def case(tokenizers):
    return idefics3_case(tokenizers[1])


# --- the batch -------------------------------------------------------------------------------------------


def test_batch_has_several_images_padding_and_a_text_only_row(case):
    batch = case.batch()
    per_row = (batch["input_ids"] == IMAGE_ID).sum(dim=1).tolist()
    assert per_row == [(5 + 3) * TOKENS_PER_TILE, 0, 3 * TOKENS_PER_TILE] and TOKENS_PER_TILE == 4
    assert (batch["attention_mask"] == 0).any()
    real_tiles = batch["pixel_values"].flatten(2).ne(0).any(-1).sum(-1).tolist()  # [B]
    assert real_tiles == [8, 0, 3]


# --- docs/METHOD.md invariants ----------------------------------------------------------------------------------------


# --- vision positions --------------------------------------------------------------------------------------


def test_vision_span_is_what_the_processor_marks_multimodal(case, tokenizers):
    """transformers' own ``mm_token_type_ids`` (the text each <image> expands to) is the independent reference."""
    processor = make_idefics3_processor(tokenizers[1])
    batch = case.batch()
    for row, (query, _, sizes) in enumerate(SAMPLES):
        if not sizes:
            continue
        images = [Image.new("RGB", size, (90, 90, 90)) for size in sizes]  # pixels do not change the ids
        ref = processor(text=swift_prompt(query), images=[images], return_mm_token_type_ids=True, return_tensors="pt")
        n = ref["input_ids"].shape[1]
        assert torch.equal(ref["input_ids"][0], batch["input_ids"][row, :n])
        got = case.family.vision_mask(batch["input_ids"][row : row + 1], case.student.config)[0]
        assert torch.equal(got[:n], ref["mm_token_type_ids"][0].bool())
        assert not got[n:].any()  # the answer and the padding are text


def test_vision_span_covers_tile_markers_and_row_newlines_but_not_text_between_images(case, tokenizers):
    tokenizer = tokenizers[1]
    ids = case.batch()["input_ids"][:1]
    mask = case.family.vision_mask(ids, case.student.config)[0]
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    vision_text = {t for t, m in zip(tokens, mask.tolist(), strict=True) if m}
    assert {"row", "col", "obal", "Ċ", "<fake_token_around_image>", "<image>"} <= vision_text
    span_ends = (ids[0] == FAKE_ID).nonzero().flatten()
    between = tokenizer.decode(ids[0, int(span_ends[5]) + 1 : int(span_ends[6])])  # closing fake of image 1 ...
    assert between == "Compare"  # ... to the opening fake of image 2: the user's text
    assert not mask[int(span_ends[5]) + 1 : int(span_ends[6])].any()
    assert int(mask.sum()) > int((ids == IMAGE_ID).sum())  # more than the <image> tokens alone


# --- the image-token count check ---------------------------------------------------------------------------


def test_check_batch_accepts_correct_batches_in_both_layouts(case):
    family, batch = case.family, case.batch()
    family.check_batch(batch, case.student)  # HF layout: one pixel row per batch row
    swift_layout = dict(batch, pixel_values=batch["pixel_values"][[0, 2]])  # swift: image rows only
    family.check_batch(swift_layout, case.student)
    text_only = {k: v[1:2] for k, v in batch.items() if k != "pixel_values"}
    family.check_batch(text_only, case.student)


def _drop_image_tokens(batch: dict, row: int, count: int) -> dict:
    """Row ``row`` with ``count`` of its <image> tokens removed (as swift's template loses them), re-padded."""
    ids, labels, mask = batch["input_ids"].clone(), batch["labels"].clone(), batch["attention_mask"].clone()
    keep = torch.ones(ids.shape[1], dtype=torch.bool)
    keep[(ids[row] == IMAGE_ID).nonzero().flatten()[:count]] = False
    for tensor, pad in ((ids, int(ids[1, -1])), (labels, -100), (mask, 0)):
        kept = tensor[row][keep]
        tensor[row] = torch.cat([kept, kept.new_full((count,), pad)])
    return dict(batch, input_ids=ids, labels=labels, attention_mask=mask)


def test_check_batch_names_the_row_with_too_few_image_tokens_which_the_model_accepts_silently(case):
    family = case.family
    bad = _drop_image_tokens(case.batch(), row=2, count=4)
    case.student(**{k: bad[k] for k in case.forward_keys})  # transformers does not check the count: no error
    with pytest.raises(ValueError, match=r"row 2 of the batch has 8 <image> tokens but its 3 image tiles produce 12"):
        family.check_batch(bad, case.student)
    swift_layout = dict(bad, pixel_values=bad["pixel_values"][[0, 2]])
    with pytest.raises(ValueError, match=r"row 2 .*Fix: .*follow every <image> with a word"):
        family.check_batch(swift_layout, case.student)
    packed = dict(bad, input_ids=bad["input_ids"].reshape(1, -1))  # no row mapping: totals are compared
    with pytest.raises(
        ValueError, match=r"the batch \(all rows\) has 40 <image> tokens but its 11 image tiles produce 44"
    ):
        family.check_batch(packed, case.student)


def test_check_batch_refuses_image_tokens_without_pixels(case):
    batch = {k: v for k, v in case.batch().items() if not k.startswith("pixel")}
    with pytest.raises(ValueError, match="has 44 <image> tokens but its 0 image tiles"):
        case.family.check_batch(batch, case.student)


# --- family and lineage ------------------------------------------------------------------------------------


def test_family_is_found_by_swift_and_transformers_model_type():
    assert isinstance(family_for(NAME), Idefics3Family)
    assert isinstance(family_for(config=Idefics3Config()), Idefics3Family)
    assert Idefics3Family().vision_token_ids(Idefics3Config()) == (128257, 128256)  # swift's hard-coded ids
    smolvlm = Idefics3Config(image_token_id=49153)  # SmolVLM-Instruct: <fake_token_around_image> 49152
    assert Idefics3Family().vision_token_ids(smolvlm) == (49153, 49152)


# Published config.json values, written out so no hub access is needed (architecture fields only).
# HuggingFaceTB/SmolVLM-Instruct config.json, "text_config" (SmolLM2-1.7B with the RoPE base raised for 16k context)
SMOLVLM_INSTRUCT_TEXT = dict(
    model_type="llama", num_hidden_layers=24, hidden_size=2048, intermediate_size=8192, num_attention_heads=32,
    num_key_value_heads=32, head_dim=64, rope_theta=273768.0, rms_norm_eps=1e-05, vocab_size=49155,
    max_position_embeddings=16384, tie_word_embeddings=False,
)  # fmt: skip
# HuggingFaceTB/SmolLM2-1.7B-Instruct config.json
SMOLLM2_1_7B_INSTRUCT = dict(
    num_hidden_layers=24, hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=32,
    rope_theta=130000, rope_scaling=None, rms_norm_eps=1e-05, vocab_size=49152, max_position_embeddings=8192,
    tie_word_embeddings=True,
)  # fmt: skip
# HuggingFaceTB/SmolLM2-360M-Instruct config.json
SMOLLM2_360M_INSTRUCT = dict(
    num_hidden_layers=32, hidden_size=960, intermediate_size=2560, num_attention_heads=15, num_key_value_heads=5,
    rope_theta=100000, rope_scaling=None, rms_norm_eps=1e-05, vocab_size=49152, max_position_embeddings=8192,
    tie_word_embeddings=True,
)  # fmt: skip
# HuggingFaceM4/Idefics3-8B-Llama3 config.json, "text_config" (Llama-3.1-8B-Instruct plus 3 added tokens)
IDEFICS3_8B_LLAMA3_TEXT = dict(
    model_type="llama", num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
    num_key_value_heads=8, rope_theta=500000.0, rms_norm_eps=1e-05, vocab_size=128259,
    max_position_embeddings=131072,
    rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
)  # fmt: skip
# meta-llama/Meta-Llama-3.1-8B-Instruct config.json
LLAMA_3_1_8B_INSTRUCT = dict(
    num_hidden_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
    rope_theta=500000.0, rms_norm_eps=1e-05, vocab_size=128256, max_position_embeddings=131072,
    rope_scaling={"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
)  # fmt: skip


def student_lineage(text_config: dict, image_token_id: int):
    return family_for(NAME).lineage(Idefics3Config(text_config=text_config, image_token_id=image_token_id))


def _row(name: str, student, teacher) -> str:
    return f"{name:<16} student {student!s:<14} teacher {teacher}"


def test_idefics3_8b_matches_the_llama_it_was_built_from():
    """swift's registered idefics3 checkpoint (its template's token ids are this model's) and its Llama 3.1."""
    check_lineage(student_lineage(IDEFICS3_8B_LLAMA3_TEXT, 128257), lineage_of(LlamaConfig(**LLAMA_3_1_8B_INSTRUCT)))


def test_smolvlm_instruct_raised_the_rope_base_of_its_smollm2_so_the_pair_is_refused():
    """SmolVLM-Instruct's LM is SmolLM2-1.7B-Instruct with rope_theta 130000 -> 273768 (16k context): the teacher's
    own rotations would not match the student's shared keys, so the only mismatch listed is the rotary base. Refused
    without re-basing (this call's default); the plugin re-bases by default: tests/test_published_pairs.py."""
    student = student_lineage(SMOLVLM_INSTRUCT_TEXT, 49153)
    with pytest.raises(LineageError) as info:
        check_lineage(student, lineage_of(LlamaConfig(**SMOLLM2_1_7B_INSTRUCT)), "HuggingFaceTB/SmolLM2-1.7B-Instruct")
    table = str(info.value).split("language model:\n")[1].split("\nLinguDistill")[0]
    assert table.splitlines() == ["    " + _row("rotary_base", 273768.0, 130000.0)]


def test_smolvlm_instruct_with_a_smaller_smollm2_lists_every_mismatch():
    student = student_lineage(SMOLVLM_INSTRUCT_TEXT, 49153)
    with pytest.raises(LineageError) as info:
        check_lineage(student, lineage_of(LlamaConfig(**SMOLLM2_360M_INSTRUCT)), "HuggingFaceTB/SmolLM2-360M-Instruct")
    message = str(info.value)
    for name, s, t in [
        ("layers", 24, 32),
        ("hidden_size", 2048, 960),
        ("attention_heads", 32, 15),
        ("kv_heads", 32, 5),
        ("rotary_base", 273768.0, 100000.0),
    ]:
        assert _row(name, s, t) in message
    assert "head_size" not in message and "norm_eps" not in message  # 64 and 1e-5 on both sides
    assert "HuggingFaceTB/SmolLM2-360M-Instruct" in message and "Fix:" in message


def test_batch_builder_is_deterministic_per_seed_and_images_differ_across_seeds(tokenizers):
    processor = make_idefics3_processor(tokenizers[1])
    a, b, c = (make_idefics3_batch(processor, seed) for seed in (0, 0, 100))
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["input_ids"], c["input_ids"])
    assert not torch.equal(a["pixel_values"], c["pixel_values"])
