"""Rotary re-basing of the shared keys (rope_rebase.py): a teacher at base B reads a student at base A exactly.

Invariants (issue 14):
(a) one-layer students: a teacher at base B reading the re-based keys of a student at base A gives the logits of
    the same student rebuilt at base B (float32 rounding), for 1-D RoPE (Idefics3) and Qwen3-VL's interleaved
    M-RoPE; without re-basing, or with M-RoPE positions read as 1-D, they differ;
(b) re-basing A -> A is the identity;
(c) the per-frequency 3-D positions follow transformers' own rotary embeddings (the independent reference), for
    Qwen2.5-VL's sectioned and Qwen3-VL's interleaved layouts.
One layer, because a deeper student at another base has other hidden states at the image positions after its
first layer (image tokens attend to each other at that base), so only layer 0's keys are the same pre-RoPE keys.
"""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen3VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb as qwen2_apply_rotary
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

from swift_lingudistill.families import family_for
from swift_lingudistill.kv_share import ROUTER
from swift_lingudistill.rope_rebase import (
    RotaryRebase,
    frequency_positions,
    interleaved_components,
    sectioned_components,
)
from swift_lingudistill.tiny.common import TinySize
from tests.support.cases.idefics3 import make_idefics3_batch
from tests.support.harness import (
    FamilyCase,
    context,
    distiller_for,
    student_logits,
    teacher_logits,
    text_positions,
    train_like_swift,
)
from tests.support.tiny.idefics3 import IDEFICS3_SIZE, IDEFICS3_VOCAB, make_idefics3, make_llama3_lm
from tests.support.tiny.idefics3 import make_idefics3_processor as idefics3_processor
from tests.support.tiny.qwen3_vl import make_qwen3_lm, make_qwen3_vl, make_qwen3_vl_processor, qwen3_tokenizer
from tests.support.vl_batches import make_batch

BASE_A, BASE_B = 5_000_000.0, 1_000_000.0  # Qwen3-VL's and Qwen3's published bases
# The one-layer models' teacher base: further from A, so that a tiny image grid's 3-D offsets (a few positions)
# turn keys measurably differently when read as 1-D; the invariant is exact for any pair of bases.
MODEL_BASE_B = 10_000.0


# --- (b) and (c): the rotation itself, against transformers' rotary embeddings ----------------------------


def _positions_3d(batch: int = 2, length: int = 40, seed: int = 0) -> torch.Tensor:
    """[3, B, L] M-RoPE positions whose T/H/W components differ (as at image tokens), up to a few thousand."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4000, (3, batch, length), generator=gen)


def _post_rope(rotary: torch.nn.Module, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Keys [B, H, L, D] post-RoPE'd by a transformers rotary embedding at ``positions`` ([3, B, L] or [B, L])."""
    cos, sin = rotary(keys, positions)
    return qwen2_apply_rotary(keys, keys, cos, sin)[1]


def _mrope_text_config(cls, base: float, section: list[int], interleaved: bool):
    rope = {"rope_type": "default", "rope_theta": base, "mrope_section": section}
    if interleaved:
        rope["mrope_interleaved"] = True
    text = {"hidden_size": 64, "num_attention_heads": 4, "head_dim": 16, "rope_parameters": rope}
    return cls(text_config=text).text_config


LAYOUTS = {
    # name: (config class, rotary class, section over 8 frequencies, interleaved, component map)
    "sectioned (Qwen2.5-VL)": (Qwen2_5_VLConfig, Qwen2_5_VLRotaryEmbedding, [2, 3, 3], False, sectioned_components),
    "interleaved (Qwen3-VL)": (Qwen3VLConfig, Qwen3VLTextRotaryEmbedding, [4, 2, 2], True, interleaved_components),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rebased_keys_equal_keys_rotated_at_the_other_base_at_the_same_3d_positions(layout):
    """(c) at the level of the rotation: transformers' own M-RoPE at base A then re-based = its M-RoPE at base B.
    Reading the 3-D positions as 1-D (the temporal row for every frequency) does not give that."""
    config_cls, rotary_cls, section, interleaved, components_of = LAYOUTS[layout]
    rotary_a = rotary_cls(_mrope_text_config(config_cls, BASE_A, section, interleaved))
    rotary_b = rotary_cls(_mrope_text_config(config_cls, BASE_B, section, interleaved))
    positions = _positions_3d()
    keys = torch.randn(2, 2, positions.shape[-1], 16, generator=torch.Generator().manual_seed(1))  # [B, H, L, D]
    at_a, at_b = _post_rope(rotary_a, keys, positions), _post_rope(rotary_b, keys, positions)
    rebase = RotaryRebase(rotary_a.inv_freq, rotary_b.inv_freq)
    per_frequency = frequency_positions(positions, components_of(section, 8))  # [B, L, 8]
    rebased = rebase.key_rotation(per_frequency)(at_a)
    torch.testing.assert_close(rebased, at_b, rtol=0, atol=2e-5)
    as_1d = frequency_positions(positions[0], torch.zeros(8, dtype=torch.long))  # temporal row everywhere
    assert (rebase.key_rotation(as_1d)(at_a) - at_b).abs().max() > 0.1
    # the other layout's map is wrong for this rotary embedding too
    other = interleaved_components if components_of is sectioned_components else sectioned_components
    assert (rebase.key_rotation(frequency_positions(positions, other(section, 8)))(at_a) - at_b).abs().max() > 0.1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_family_adapters_read_their_layout_from_the_config(layout):
    """Qwen2-VL / Qwen2.5-VL adapters give the sectioned map, Qwen3-VL's the interleaved one, from mrope_section."""
    config_cls, _, section, interleaved, components_of = LAYOUTS[layout]
    name = "qwen3_vl" if interleaved else "qwen2_5_vl"
    text = _mrope_text_config(config_cls, BASE_A, section, interleaved)
    config = config_cls(text_config=text.to_dict())
    assert torch.equal(family_for(name).frequency_components(config, 8), components_of(section, 8))
    assert torch.equal(family_for("llava1_5_hf").frequency_components(config, 8), torch.zeros(8, dtype=torch.long))


def test_rebasing_a_to_a_is_the_identity():
    """(b) with and without a cos/sin scale (YaRN's attention factor), to float32 rounding."""
    inv_freq = 1.0 / (BASE_A ** (torch.arange(0, 16, 2).float() / 16))
    keys = torch.randn(3, 2, 50, 16, generator=torch.Generator().manual_seed(2))
    positions = frequency_positions(_positions_3d(3, 50), interleaved_components([4, 2, 2], 8))
    for scaling in (1.0, 1.2):
        same = RotaryRebase(inv_freq, inv_freq, scaling, scaling).key_rotation(positions)(keys)
        torch.testing.assert_close(same, keys, rtol=0, atol=2e-6)


def test_values_and_dtypes_and_partial_rotary_dims():
    """Keys keep their dtype; dimensions beyond the rotary ones (partial rotary) pass through untouched."""
    inv_a = 1.0 / (BASE_A ** (torch.arange(0, 8, 2).float() / 8))  # 4 frequencies = 8 rotary dims of 16
    inv_b = 1.0 / (BASE_B ** (torch.arange(0, 8, 2).float() / 8))
    keys = torch.randn(1, 2, 10, 16, dtype=torch.bfloat16)
    positions = torch.arange(10)[None, :, None].expand(1, 10, 4)
    out = RotaryRebase(inv_a, inv_b).key_rotation(positions)(keys)
    assert out.dtype == torch.bfloat16 and torch.equal(out[..., 8:], keys[..., 8:])
    assert not torch.equal(out[..., :8], keys[..., :8])


# --- (a): one-layer students, through the distiller and the KV router ----------------------------------------


def _qwen3_vl_pair(name: str):
    size_a, size_b = TinySize(layers=1, rope_theta=BASE_A), TinySize(layers=1, rope_theta=MODEL_BASE_B)
    student_a = make_qwen3_vl(size_a, seed=0, lm=make_qwen3_lm(size_a, seed=0))
    student_b, teacher = make_qwen3_vl(size_b, seed=0), make_qwen3_lm(size_b, seed=0)
    processor = make_qwen3_vl_processor(qwen3_tokenizer())
    return student_a, student_b, teacher, lambda student, seed: make_batch(processor, student, images_seed=seed)


def _idefics3_pair(name: str):
    size_a = TinySize(**{**IDEFICS3_SIZE.__dict__, "layers": 1, "rope_theta": 273768.0})  # SmolVLM-Instruct's base
    size_b = TinySize(**{**size_a.__dict__, "rope_theta": MODEL_BASE_B})  # not SmolLM2's 130000: see MODEL_BASE_B
    student_a = make_idefics3(size_a, seed=0, lm=make_llama3_lm(size_a, seed=0, vocab=IDEFICS3_VOCAB))
    student_b = make_idefics3(size_b, seed=0)
    teacher = make_llama3_lm(size_b, seed=0, vocab=IDEFICS3_VOCAB)
    processor = idefics3_processor()
    return student_a, student_b, teacher, lambda student, seed: make_idefics3_batch(processor, seed)


# Qwen3-VL (interleaved M-RoPE, the published pair) and Idefics3 (1-D RoPE, SmolVLM's architecture) through the
# models; Qwen2.5-VL's sectioned layout is checked against its rotary embedding above and its family map below.
PAIRS = {"qwen3_vl": _qwen3_vl_pair, "idefics3": _idefics3_pair}
FORWARD_KEYS = {
    "qwen3_vl": ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "position_ids"),
    "idefics3": ("input_ids", "attention_mask", "pixel_values", "pixel_attention_mask"),
}


@pytest.fixture(scope="module", params=sorted(PAIRS))
def pair(request):
    """(case at base A, the same student at base B, the text-only teacher at base B)."""
    name = request.param
    student_a, student_b, teacher, build = PAIRS[name](name)
    student_b.load_state_dict(student_a.state_dict())  # the same weights; only the rotary base differs
    teacher.model.load_state_dict(family_for(name).language_model(student_a).state_dict())
    teacher.lm_head.load_state_dict(student_a.lm_head.state_dict())
    case_a = FamilyCase(name, train_like_swift(student_a), teacher.eval(), lambda s=0: build(student_a, s),
                        FORWARD_KEYS[name])  # fmt: skip
    case_b = FamilyCase(name, train_like_swift(student_b), teacher, lambda s=0: build(student_b, s), FORWARD_KEYS[name])
    return case_a, case_b


def _teacher_on_student(case: FamilyCase, rebase) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher logits at every text position, the student's own logits there), one forward each."""
    distiller = distiller_for(case, teacher_model=case.other_teacher, scope="image", rebase=rebase)
    batch = case.batch()
    ctx = context(case, batch)
    if rebase is not None:
        ctx.rotary_frequency = case.family.frequency_positions(batch, case.student, rebase.frequencies)
    logits = student_logits(case, batch)
    mask = text_positions(ctx)
    return teacher_logits(distiller, ctx, mask), logits[mask].detach()


def test_teacher_at_base_b_on_rebased_keys_equals_the_student_rebuilt_at_base_b(pair):
    """(a): exact, and the test has teeth: without re-basing the teacher is off."""
    case_a, case_b = pair
    rebase = RotaryRebase.between(case_a.family.language_model(case_a.student), case_a.other_teacher.model)
    got, _ = _teacher_on_student(case_a, rebase)
    _, want = _teacher_on_student(case_b, None)  # the student at base B, through the plain self-identity path
    diff = (got - want).abs().max().item()
    assert got.shape[0] > 20 and diff <= 2e-5, f"max |diff| {diff:.2e}"
    unrebased, _ = _teacher_on_student(case_a, None)
    assert (unrebased - want).abs().max() > 1e-3


def _layer0_keys(case: FamilyCase) -> torch.Tensor:
    """[B, Hkv, L, D] the student's post-RoPE keys of its (only) layer, as the KV router captures them."""
    distiller_for(case, teacher_model=case.other_teacher)  # binds the student's attention modules to the router
    student_logits(case, case.batch())
    return ROUTER.captured[0][0].detach()


def test_the_familys_3d_positions_turn_captured_keys_into_the_base_b_students(pair):
    """(c) on the real batch: the adapter's per-frequency positions (sectioned / interleaved M-RoPE from swift's
    [3, B, L] position_ids) turn layer 0's captured keys at base A into the base-B student's keys exactly; read as
    1-D (the text row for every frequency), the image keys come out wrong."""
    case_a, case_b = pair
    rebase = RotaryRebase.between(case_a.family.language_model(case_a.student), case_a.other_teacher.model)
    batch = case_a.batch()
    keys_a, keys_b = _layer0_keys(case_a), _layer0_keys(case_b)
    positions = case_a.family.frequency_positions(batch, case_a.student, rebase.frequencies)  # [B, L, F]
    diff = (rebase.key_rotation(positions)(keys_a) - keys_b).abs().max().item()
    assert diff <= 1e-5, f"max |diff| {diff:.2e}"
    vision = case_a.family.vision_mask(batch["input_ids"], case_a.student.config)  # [B, L]
    as_1d = case_a.family.rotary_positions(batch, case_a.student)[..., None].expand_as(positions)
    wrong = (rebase.key_rotation(as_1d)(keys_a) - keys_b).abs().amax(dim=(1, 3))  # [B, L]
    if case_a.name == "idefics3":  # 1-D RoPE: the 1-D reading is the right one
        assert wrong.max() <= 1e-5
    else:
        assert wrong[vision].max() > 1e-2 and wrong[~vision].max() <= 1e-5  # text tokens: T = H = W


def test_the_distiller_reads_per_frequency_positions_when_it_rebases():
    """Distiller.start_step (what the trainer calls before the student's forward): swift's [3, B, L] position_ids
    -> [B, L, F] per-frequency positions in Qwen3-VL's interleaved layout, only when the distiller re-bases."""
    from types import SimpleNamespace

    from swift_lingudistill.distiller import BatchContext, Distiller

    positions = _positions_3d(2, 6)  # [3, B, L]
    text = SimpleNamespace(rope_parameters={"mrope_section": [4, 2, 2]})
    model = SimpleNamespace(config=SimpleNamespace(image_token_id=151655, video_token_id=151656, text_config=text))
    batch = {"input_ids": torch.ones(2, 6, dtype=torch.long), "position_ids": positions}
    inv = torch.ones(8)
    for rebase in (RotaryRebase(inv, inv * 2), None):
        distiller = object.__new__(Distiller)  # the step's glue only: no teacher, no router binding
        distiller.family, distiller.rebase = family_for("qwen3_vl"), rebase
        distiller.config = SimpleNamespace(loss=SimpleNamespace(lambda_=1.0))
        distiller.router = SimpleNamespace(start_capture=lambda: None)
        ctx = BatchContext(
            input_ids=batch["input_ids"],
            labels=torch.full((2, 6), -100),
            valid=torch.ones(2, 6, dtype=torch.bool),
            token_weight=torch.ones(2, 6),
            sample_weight=torch.ones(2),
        )
        distiller.start_step(ctx, batch, model)
        assert torch.equal(ctx.rotary, positions[0])
        if rebase is None:
            assert ctx.rotary_frequency is None
        else:
            want = frequency_positions(positions, interleaved_components([4, 2, 2], 8))
            assert torch.equal(ctx.rotary_frequency, want)
