"""Qwen3-VL: docs/METHOD.md invariants 1-5 on a tiny student (gradient checkpointing on, as swift trains), deepstack
and interleaved M-RoPE checks, and the teacher's lineage from the published config.json values of real checkpoints.

The batch has three samples of different lengths (right padding): two images in one, none in another, one in the
third. The tiny student's deepstack adds visual features after both of its language-model layers.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, Qwen3ForCausalLM

from swift_lingudistill.families import family_for, lineage_of
from swift_lingudistill.families.qwen3_vl import Qwen3VLFamily
from swift_lingudistill.teacher import LineageError, check_lineage
from tests.support.cases.qwen3_vl import qwen3_vl_case
from tests.support.harness import SCOPES, context, distiller_for, student_logits, teacher_logits, text_positions
from tests.support.invariants import check_sequence_positions_break_identity
from tests.support.tiny.qwen3_vl import qwen3_tokenizer

IMAGE_PAD, VIDEO_PAD = 151655, 151656


@pytest.fixture(scope="module")
def case():
    return qwen3_vl_case(qwen3_tokenizer())


def test_the_adapter_is_registered_for_qwen3_vl():
    assert isinstance(family_for("qwen3_vl"), Qwen3VLFamily)
    assert family_for(None, AutoConfig.for_model("qwen3_vl")).name == "qwen3_vl"


def test_batch_has_several_images_padding_and_a_text_only_row(case):
    batch = case.batch()
    assert batch["image_grid_thw"].shape[0] == 3 and (batch["attention_mask"] == 0).any()
    assert batch["position_ids"].shape[0] == 3  # [3, B, L], what swift's collator leaves in a training batch
    assert not (batch["input_ids"][1] == IMAGE_PAD).any()
    assert (batch["input_ids"][0] == IMAGE_PAD).sum() == 4 + 6


# --- invariant 1: self-teacher identity, every scope ------------------------------------------------------
def _qwen3_copy_of_student_lm(case) -> Qwen3ForCausalLM:
    """The student's language model exported as a plain ``Qwen3ForCausalLM`` (1-D RoPE, no deepstack)."""
    text = case.student.config.text_config
    teacher = Qwen3ForCausalLM(
        Qwen3ForCausalLM.config_class(
            vocab_size=text.vocab_size,
            hidden_size=text.hidden_size,
            intermediate_size=text.intermediate_size,
            num_hidden_layers=text.num_hidden_layers,
            num_attention_heads=text.num_attention_heads,
            num_key_value_heads=text.num_key_value_heads,
            head_dim=text.head_dim,
            rms_norm_eps=text.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": text.rope_parameters["rope_theta"]},
            tie_word_embeddings=False,
        )
    )
    teacher.model.load_state_dict(case.student.model.language_model.state_dict(), strict=True)
    teacher.lm_head.load_state_dict(case.student.lm_head.state_dict(), strict=True)
    return teacher.eval()


@pytest.mark.parametrize("scope", SCOPES)
def test_qwen3_class_teacher_with_the_students_weights_equals_the_student(case, scope):
    """The real teacher class (Qwen3, 1-D RoPE) reproduces the student (interleaved M-RoPE, deepstack) exactly:
    equal T/H/W components at text tokens make interleaved M-RoPE the 1-D rotation at the temporal row."""
    distiller = distiller_for(case, teacher_model=_qwen3_copy_of_student_lm(case), scope=scope)
    batch = case.batch()
    ctx = context(case, batch)
    logits = student_logits(case, batch)
    mask = text_positions(ctx)
    got = teacher_logits(distiller, ctx, mask)
    torch.testing.assert_close(got, logits[mask].detach(), rtol=1e-4, atol=2e-5)


def test_sequence_positions_instead_of_student_positions_break_identity(case):
    check_sequence_positions_break_identity(case)


def test_deepstack_reaches_the_teacher_through_the_shared_kv(case, monkeypatch):
    """Deepstack changes the student's K/V at image positions in later layers; the teacher reads those K/V.

    With deepstack switched off in the student, a different teacher's text logits after the image change, so
    the identity above holds with deepstack really on (it is not vacuous for this family).
    """
    distiller = distiller_for(case, teacher_model=case.other_teacher)
    batch = case.batch()
    ctx = context(case, batch)
    mask = text_positions(ctx)
    student_logits(case, batch)
    with_deepstack = teacher_logits(distiller, ctx, mask)
    language_model = case.student.model.language_model
    monkeypatch.setattr(language_model, "_deepstack_process", lambda hidden, *_: hidden)
    student_logits(case, batch)
    without = teacher_logits(distiller, ctx, mask)
    first_image = int(ctx.vision[0].nonzero()[0])
    before = int(mask[0, :first_image].sum())
    torch.testing.assert_close(with_deepstack[:before], without[:before])
    assert (with_deepstack[before:] - without[before:]).abs().max() > 1e-4


# --- invariants 2-5 ---------------------------------------------------------------------------------------
# --- rotary positions the adapter reads -------------------------------------------------------------------
def test_rotary_positions_are_the_temporal_row_in_every_layout(case):
    batch = case.batch()
    family, student = case.family, case.student
    three = batch["position_ids"]  # [3, B, L]
    assert torch.equal(family.rotary_positions(batch, student), three[0])
    four = torch.cat([torch.arange(three.shape[-1]).expand(1, *three.shape[1:]), three])  # text row first
    assert torch.equal(family.rotary_positions({**batch, "position_ids": four}, student), three[0])
    # No positions and no mm_token_type_ids in the batch: computed from the ids, as the model would.
    bare = {k: batch[k] for k in ("input_ids", "attention_mask", "image_grid_thw")}
    valid = batch["attention_mask"].bool()
    assert torch.equal(family.rotary_positions(bare, student)[valid], three[0][valid])


# --- lineage: published config.json values (Qwen3-VL text_config and Qwen3), no weights, no downloads ------
QWEN3_VL_8B_INSTRUCT = {
    "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "tie_word_embeddings": False,
    "text_config": {
        "model_type": "qwen3_vl_text", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-06,
        "max_position_embeddings": 262144, "rope_theta": 5000000, "vocab_size": 151936,
        "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
    },
    "vision_config": {
        "model_type": "qwen3_vl", "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
        "out_hidden_size": 4096, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "deepstack_visual_indexes": [8, 16, 24], "num_position_embeddings": 2304,
    },
}  # fmt: skip
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288,
    "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "rms_norm_eps": 1e-06, "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rope_scaling": None,
    "use_sliding_window": False, "sliding_window": None, "max_window_layers": 36, "tie_word_embeddings": False,
    "vocab_size": 151936,
}  # fmt: skip
# Qwen3-4B: 36 layers, 32 heads, 8 KV heads, head_dim 128 and RoPE base 1e6 like Qwen3-8B; narrower.
QWEN3_4B = {**QWEN3_8B, "hidden_size": 2560, "intermediate_size": 9728, "tie_word_embeddings": True}


def _config(tmp_path, name: str, data: dict):
    """Load a config.json the way the plugin does (AutoConfig on a local folder)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(data))
    return AutoConfig.from_pretrained(folder)


def _student(tmp_path):
    return family_for("qwen3_vl").lineage(_config(tmp_path, "student", QWEN3_VL_8B_INSTRUCT))


def test_student_lineage_reads_the_text_config(tmp_path):
    assert _student(tmp_path) == dict(
        layers=36, hidden_size=4096, attention_heads=32, kv_heads=8, head_size=128,
        rotary_base=5000000.0, rotary_scaling=None, norm_eps=1e-06, sliding_window=None,
    )  # fmt: skip


def test_qwen3_8b_differs_from_qwen3_vl_8b_only_in_rotary_base(tmp_path):
    """Qwen3-VL-8B's language model has Qwen3-8B's shape but a 5x larger RoPE base (256K context): the
    teacher's queries would rotate at other frequencies than the student's shared keys, so without re-basing (this
    call's default) it is refused. The plugin re-bases by default: tests/test_published_pairs.py."""
    with pytest.raises(LineageError) as info:
        check_lineage(_student(tmp_path), lineage_of(_config(tmp_path, "qwen3_8b", QWEN3_8B)), "Qwen/Qwen3-8B")
    table = str(info.value).split("model:\n")[1].split("\nLinguDistill")[0].splitlines()
    assert table == [f"    {'rotary_base':<16} student {'5000000.0':<14} teacher 1000000.0"]


def test_a_qwen3_lm_with_the_students_numbers_matches(tmp_path):
    """A Qwen3 text checkpoint with every lineage number of Qwen3-VL-8B's language model passes (e.g. that
    language model exported as Qwen3ForCausalLM)."""
    teacher = _config(tmp_path, "qwen3_8b_5m", {**QWEN3_8B, "rope_theta": 5000000, "max_position_embeddings": 262144})
    check_lineage(_student(tmp_path), lineage_of(teacher))


def test_wrong_size_lists_every_mismatch(tmp_path):
    with pytest.raises(LineageError) as info:
        check_lineage(_student(tmp_path), lineage_of(_config(tmp_path, "qwen3_4b", QWEN3_4B)), "Qwen/Qwen3-4B")
    message = str(info.value)
    table = message.split("model:\n")[1].split("\nLinguDistill")[0].splitlines()
    assert table == [
        f"    {'hidden_size':<16} student {'4096':<14} teacher 2560",
        f"    {'rotary_base':<16} student {'5000000.0':<14} teacher 1000000.0",
    ]
    assert "Qwen/Qwen3-4B" in message and "Fix:" in message
