"""LLaVA-1.5 (``llava1_5_hf``): docs/METHOD.md invariants 1-5, the vocabulary one larger than the teacher's, and
lineage against the real llava-1.5-7b-hf / Vicuna-1.5 configs.

The student runs in train mode with reentrant gradient checkpointing, as swift trains it; the batch has two
images in row 0, a text-only row 1 and one image in row 2, right-padded, laid out as swift's template does.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlavaConfig

from swift_lingudistill.families import family_for, lineage_of
from swift_lingudistill.families.llava import LlavaFamily
from swift_lingudistill.teacher import LineageError, VocabularyError, check_lineage, shared_vocabulary
from tests.support.cases.llava import NAME, llava_case, make_llava_batch, teacher_with_swapped_ids
from tests.support.harness import SCOPES, context, distiller_for, student_logits, teacher_logits, text_positions
from tests.support.tiny.llava import (
    TEXT_VOCAB,
    build_llama_lm,
    image_tokens_per_image,
    llava_tokenizers,
    make_llava_processor,
)


@pytest.fixture(scope="module")
def tokenizers():
    return llava_tokenizers()  # (teacher, student)


@pytest.fixture(scope="module")
def case(tokenizers):
    return llava_case(tokenizers[1])


@pytest.fixture(scope="module")
def undrifted(tokenizers):
    """The student exactly as built from the Vicuna-like LM (no perturbation); its teacher is that LM."""
    return llava_case(tokenizers[1], perturb=0.0, other_seed=0)


# --- the batch -------------------------------------------------------------------------------------------


def test_batch_has_several_images_padding_and_a_text_only_row(case):
    batch = case.batch()
    image_id = TEXT_VOCAB
    per_row = (batch["input_ids"] == image_id).sum(dim=1).tolist()
    assert per_row == [2 * image_tokens_per_image(), 0, image_tokens_per_image()] and image_tokens_per_image() == 9
    assert batch["pixel_values"].shape == (3, 3, 42, 42)
    assert (batch["attention_mask"] == 0).any() and batch["attention_mask"][:, 0].all()  # right padding
    assert (batch["input_ids"][:, 0] == 1).all()  # the template's literal `<s>` is one special token


def test_adapter_reads_the_student_as_swift_loads_it(case):
    family = case.family
    assert isinstance(family, LlavaFamily)
    assert family_for(None, case.student.config) is family  # by config.model_type too
    assert family.vision_token_ids(case.student.config) == (TEXT_VOCAB,)
    assert family.language_model(case.student) is case.student.model.language_model
    batch = case.batch()
    ids = batch["input_ids"]
    # <image> is the one id the teacher's vocabulary lacks: vision positions = ids beyond the teacher's rows
    assert torch.equal(family.vision_mask(ids, case.student.config), ids >= TEXT_VOCAB)
    # no position_ids in swift's batch for this template: the student's positions are sequence indices
    assert torch.equal(family.rotary_positions(batch, case.student), torch.arange(ids.shape[1]).expand_as(ids))


# --- docs/METHOD.md invariants ----------------------------------------------------------------------------------------


def test_positions_that_skip_image_tokens_break_identity(case):
    """The identity check has teeth: the teacher must count image tokens in its positions, as the student does."""
    distiller = distiller_for(case)
    batch = case.batch()
    ctx = context(case, batch)
    logits = student_logits(case, batch)
    ctx.rotary = (~ctx.vision).long().cumsum(dim=1) - 1  # text-only counting: wrong after an image
    mask = text_positions(ctx)
    mask[1] = False  # the text-only row is unaffected
    diff = (teacher_logits(distiller, ctx, mask) - logits[mask].detach()).abs().max()
    assert diff > 1e-3


# --- vocabulary: student = teacher + <image> ---------------------------------------------------------------


@pytest.mark.parametrize("scope", SCOPES)
def test_vicuna_teacher_with_one_row_fewer_reproduces_the_student(undrifted, scope):
    """Teacher = the LM the student was built from (384 rows vs 385): identical logits over the shared ids."""
    teacher = undrifted.other_teacher
    distiller = distiller_for(undrifted, teacher_model=teacher, scope=scope)
    assert distiller.shared_vocab == TEXT_VOCAB == teacher.lm_head.weight.shape[0]
    batch = undrifted.batch()
    ctx = context(undrifted, batch)
    logits = student_logits(undrifted, batch)  # [B, L, 385]
    assert logits.shape[-1] == TEXT_VOCAB + 1
    mask = text_positions(ctx)
    got = teacher_logits(distiller, ctx, mask)  # [N, 384]
    torch.testing.assert_close(got, logits[mask].detach()[:, :TEXT_VOCAB], rtol=1e-4, atol=2e-5)
    # ... so the distillation term is 0 through the real loss, which slices the student's extra id away
    _, stats = distiller.loss(logits.detach(), batch["labels"], ctx)
    assert stats.teacher_ran and stats.kd.numel() > 20 and stats.kd.abs().max() <= 1e-6


def test_identical_base_vocabulary_is_shared(tokenizers, caplog):
    teacher_tok, student_tok = tokenizers
    assert len(student_tok) == len(teacher_tok) + 1 and student_tok.convert_tokens_to_ids("<image>") == TEXT_VOCAB
    with caplog.at_level(logging.WARNING, logger="swift_lingudistill.teacher"):
        assert shared_vocabulary(student_tok, teacher_tok, TEXT_VOCAB + 1, TEXT_VOCAB) == TEXT_VOCAB
    assert not caplog.records  # <image> lies beyond the teacher's rows: nothing defined by one side only
    with caplog.at_level(logging.WARNING, logger="swift_lingudistill.teacher"):  # the capture works:
        shared_vocabulary(student_tok, teacher_tok, TEXT_VOCAB + 1, TEXT_VOCAB + 1)  # <image> on one side only
    assert "1 token ids below 385 are defined by only one" in caplog.text


def test_teacher_tokenizer_that_disagrees_on_a_shared_id_is_refused(tokenizers, tmp_path):
    teacher_tok, student_tok = tokenizers
    good = build_llama_lm(tmp_path / "vicuna", tokenizer=teacher_tok)
    bad = teacher_with_swapped_ids(good, tmp_path / "swapped", 100, 101)
    swapped = AutoTokenizer.from_pretrained(bad)  # loaded as the plugin loads it
    first, second = student_tok.convert_ids_to_tokens([100, 101])
    assert swapped.convert_ids_to_tokens([100, 101]) == [second, first]
    with pytest.raises(VocabularyError) as info:
        shared_vocabulary(student_tok, swapped, TEXT_VOCAB + 1, TEXT_VOCAB)
    message = str(info.value)
    assert f"disagree on 2 of {TEXT_VOCAB} shared token ids" in message
    assert f"id 100: student {first!r} vs teacher {second!r}" in message and "Fix:" in message


def test_processor_tells_swift_how_many_image_tokens_to_insert(tokenizers):
    """swift's template counts them from these attributes (otherwise features and tokens do not match)."""
    processor = make_llava_processor(tokenizers[1])
    assert (processor.patch_size, processor.num_additional_image_tokens) == (14, 1)
    assert processor.vision_feature_select_strategy == "default" and processor.image_token == "<image>"
    batch = make_llava_batch(processor)
    assert int((batch["input_ids"][2] == TEXT_VOCAB).sum()) == (42 // 14) ** 2 + 1 - 1


# --- lineage: the real published configs (config.json of each checkpoint), no weights, no downloads ---------

# llava-hf/llava-1.5-7b-hf: its text_config spells out only what differs from LlamaConfig's defaults
# (those defaults are Llama-2-7B's shape: 32 layers, hidden 4096, 32 heads, rope_theta 10000).
LLAVA15_7B_HF = dict(
    architectures=["LlavaForConditionalGeneration"], image_token_index=32000, pad_token_id=32001,
    projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
    vocab_size=32064, tie_word_embeddings=False,
    text_config=dict(
        _name_or_path="lmsys/vicuna-7b-v1.5", architectures=["LlamaForCausalLM"], max_position_embeddings=4096,
        model_type="llama", rms_norm_eps=1e-05, torch_dtype="float16", vocab_size=32064,
    ),
    vision_config=dict(
        hidden_size=1024, image_size=336, intermediate_size=4096, model_type="clip_vision_model",
        num_attention_heads=16, num_hidden_layers=24, patch_size=14, projection_dim=768, vocab_size=32000,
    ),
)  # fmt: skip
VICUNA_7B_V15 = dict(
    architectures=["LlamaForCausalLM"], bos_token_id=1, eos_token_id=2, hidden_act="silu", hidden_size=4096,
    initializer_range=0.02, intermediate_size=11008, max_position_embeddings=4096, num_attention_heads=32,
    num_hidden_layers=32, num_key_value_heads=32, pad_token_id=0, pretraining_tp=1, rms_norm_eps=1e-05,
    rope_scaling=None, tie_word_embeddings=False, vocab_size=32000,
)  # fmt: skip
VICUNA_13B_V15 = dict(
    architectures=["LlamaForCausalLM"], bos_token_id=1, eos_token_id=2, hidden_act="silu", hidden_size=5120,
    initializer_range=0.02, intermediate_size=13824, max_position_embeddings=4096, num_attention_heads=40,
    num_hidden_layers=40, num_key_value_heads=40, pad_token_id=0, pretraining_tp=1, rms_norm_eps=1e-05,
    rope_scaling=None, tie_word_embeddings=False, vocab_size=32000,
)  # fmt: skip


def llava_7b_lineage():
    return family_for(NAME).lineage(LlavaConfig(**LLAVA15_7B_HF))


def test_real_student_resolves_to_llama2_7b_shape():
    """The sparse text_config must still read as Vicuna-7B's shape (guards transformers' LlamaConfig defaults)."""
    config = LlavaConfig(**LLAVA15_7B_HF)
    assert family_for(NAME).vision_token_ids(config) == (32000,) and config.text_config.vocab_size == 32064
    assert llava_7b_lineage() == dict(
        layers=32, hidden_size=4096, attention_heads=32, kv_heads=32, head_size=128,
        rotary_base=10000.0, rotary_scaling=None, norm_eps=1e-5, sliding_window=None,
    )  # fmt: skip


def test_real_pair_matches():
    """llava-1.5-7b-hf's language model was initialised from lmsys/vicuna-7b-v1.5."""
    check_lineage(llava_7b_lineage(), lineage_of(LlamaConfig(**VICUNA_7B_V15)), "lmsys/vicuna-7b-v1.5")


def test_wrong_size_lists_every_mismatch():
    with pytest.raises(LineageError) as info:
        check_lineage(llava_7b_lineage(), lineage_of(LlamaConfig(**VICUNA_13B_V15)), "lmsys/vicuna-13b-v1.5")
    message = str(info.value)
    for name, student, teacher in [
        ("layers", 32, 40),
        ("hidden_size", 4096, 5120),
        ("attention_heads", 32, 40),
        ("kv_heads", 32, 40),
    ]:
        assert f"{name:<16} student {student!s:<14} teacher {teacher}" in message
    for same in ("head_size", "rotary_base", "norm_eps"):  # 128, 10000, 1e-5 on both sides: not listed
        assert same not in message
    assert "lmsys/vicuna-13b-v1.5" in message and "Fix:" in message
