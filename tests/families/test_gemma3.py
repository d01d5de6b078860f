"""Gemma 3 VLM (``gemma3_vision``) with a Gemma 3 text teacher: docs/METHOD.md invariants 1-5, Gemma specifics, lineage.

The tiny student has one sliding-window layer (window 8) and one global layer with different rotary bases,
``query_pre_attn_scalar`` != ``head_dim``, eager attention (swift forces it for Gemma 3), 9 soft tokens per image
and sequences of 40-70 tokens, so the window, the scaling and the rotary bases all change the logits.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import Gemma3Config, Gemma3TextConfig

from swift_lingudistill.families import family_for, lineage_of, supported_model_types
from swift_lingudistill.families.gemma3 import Gemma3Family, Gemma3UnsupportedConfigError
from swift_lingudistill.kv_share import ROUTER, TeacherPlan
from swift_lingudistill.teacher import LineageError, check_lineage
from tests.support.cases.gemma3 import gemma3_batch, gemma3_case
from tests.support.harness import context, distiller_for, student_logits, teacher_logits, text_positions
from tests.support.invariants import (
    check_self_teacher_identity,
)
from tests.support.tiny.gemma3 import (
    BOI_ID,
    GEMMA3_SIZE,
    IMAGE_SOFT_ID,
    gemma3_tokenizer,
    make_gemma3_lm,
    make_gemma3_processor,
)


@pytest.fixture(scope="module")
def processor():
    return make_gemma3_processor(gemma3_tokenizer())


@pytest.fixture(scope="module")
def case(processor):
    return gemma3_case("swift", processor)


@pytest.fixture(scope="module")
def bidirectional_case(case, processor):
    """The same student fed transformers' own marking: soft image tokens attend to each other both ways."""
    return dataclasses.replace(
        case, build_batch=lambda images_seed=0: gemma3_batch(processor, images_seed, "bidirectional")
    )


def identity_diff(case, distiller=None) -> float:
    """max |teacher - student| logit over every text position, self teacher (what invariant 1 bounds)."""
    distiller = distiller or distiller_for(case)
    batch = case.batch()
    ctx = context(case, batch)
    logits = student_logits(case, batch)
    mask = text_positions(ctx)
    got = teacher_logits(distiller, ctx, mask)
    return float((got - logits[mask].detach()[:, : distiller.shared_vocab]).abs().max())


# --- docs/METHOD.md invariants ----------------------------------------------------------------------------------------


# --- the batch and the tiny model are what the checks need ----------------------------------------------


def test_batch_has_several_images_padding_a_text_only_row_and_outgrows_the_window(case):
    batch = case.batch()
    soft = batch["input_ids"] == IMAGE_SOFT_ID
    assert soft.sum(1).tolist() == [18, 0, 9] and batch["pixel_values"].shape[0] == 3
    assert (batch["attention_mask"] == 0).any()
    assert int(batch["attention_mask"].sum(1).min()) > 4 * GEMMA3_SIZE.sliding_window
    config = case.student.config.text_config
    assert config.layer_types == ["sliding_attention", "full_attention"] and config.sliding_window == 8
    assert config.query_pre_attn_scalar != config.head_dim
    assert config.final_logit_softcapping is None and config.attn_logit_softcapping is None


def test_student_runs_eager_attention_and_the_router_captures_it(case):
    """swift forces eager for Gemma 3: the router's 'eager' entry must reach the modeling file's own function."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert case.family.language_model(case.student).config._attn_implementation == "eager"
    distiller_for(case)  # binds the student's and the teacher's attention modules
    assert getattr(ALL_ATTENTION_FUNCTIONS["eager"], "__lingudistill_router__", False)
    batch = case.batch()
    student_logits(case, batch)
    assert sorted(ROUTER.captured) == [0, 1]
    keys, _ = ROUTER.captured[0]
    assert keys.shape == (3, 2, batch["input_ids"].shape[1], 16)  # [B, Hkv, L, D]: every layer seen


# --- Gemma 3 specifics: each check would fail if KV sharing ignored the feature ----------------------------


@pytest.mark.parametrize("shift", [None, -1, 1], ids=["window-ignored", "window-minus-1", "window-plus-1"])
def test_sliding_window_boundary_is_the_one_transformers_uses(case, monkeypatch, shift):
    """KV sharing masks k > q - window, as masking_utils.sliding_window_overlay; any other boundary breaks identity."""
    original = TeacherPlan.mask

    def wrong_window(self, sliding_window=None):
        if sliding_window is None:
            return original(self, None)
        return original(self, None if shift is None else sliding_window + shift)

    monkeypatch.setattr(TeacherPlan, "mask", wrong_window)
    assert identity_diff(case) > 1e-3


def test_query_pre_attn_scalar_reaches_the_teacher_attention(case):
    distiller = distiller_for(case)
    for attention in case.family.attention_modules(distiller.teacher.decoder):
        attention.scaling = attention.head_dim**-0.5  # what the attention would use without Gemma's `scaling`
    assert identity_diff(case, distiller) > 1e-3


def test_local_and_global_rotary_bases_are_each_the_teachers_own(case):
    """The teacher's sliding layers rotate with the local base (10000), its full layers with the global (1e6)."""
    distiller = distiller_for(case)
    rotary = distiller.teacher.decoder.rotary_emb
    rotary.sliding_attention_inv_freq = rotary.full_attention_inv_freq.clone()  # the frozen copy only
    assert identity_diff(case, distiller) > 1e-3


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # no_grad through checkpointing
def test_swift_marking_leaves_soft_image_tokens_causal(case):
    """With swift 4.6 + transformers 5.19, token_type_ids mark <start_of_image>: a block of one token, so the
    student's mask is the plain causal (and sliding) mask, exactly as without token_type_ids."""
    batch = case.batch()
    assert (batch["token_type_ids"].bool() == (batch["input_ids"] == BOI_ID)).all()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        marked = case.student(**inputs, token_type_ids=batch["token_type_ids"]).logits
        unmarked = case.student(**inputs).logits
    torch.testing.assert_close(marked, unmarked)


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # no_grad through checkpointing
def test_bidirectional_image_attention_keeps_the_identity(case, bidirectional_case):
    """Soft tokens attending both ways change the student, and the teacher still matches it at every text position
    (its queries are text, which attend causally; every image position is shared)."""
    swift_batch, bi_batch = case.batch(), bidirectional_case.batch()
    with torch.no_grad():
        a = student_logits(case, swift_batch, capture=False)
        b = student_logits(bidirectional_case, bi_batch, capture=False)
    after_image = text_positions(context(case, swift_batch))
    after_image[:, : int((swift_batch["input_ids"][0] == IMAGE_SOFT_ID).nonzero()[0])] = False
    assert (a[after_image] - b[after_image]).abs().max() > 1e-3  # the bidirectional mask really was used
    check_self_teacher_identity(bidirectional_case, "image")  # the scope where the teacher owns most positions


# --- configs the teacher cannot follow are refused ---------------------------------------------------------


# google/gemma-3-4b-it, config.json: the published text_config sets hidden_size 2560, intermediate_size 10240,
# num_hidden_layers 34, rope_scaling {factor 8.0, linear}, sliding_window 1024; the rest are Gemma3TextConfig's
# defaults it relies on (8 heads, 4 KV heads, head_dim 256, rope_theta 1e6, rope_local_base_freq 10000,
# sliding_window_pattern 6 = 5 local : 1 global, rms_norm_eps 1e-6, query_pre_attn_scalar 256, vocab 262208),
# written out so that a change of transformers' defaults cannot move the fixture.
GEMMA3_4B_IT_TEXT = dict(
    num_hidden_layers=34, hidden_size=2560, intermediate_size=10240, num_attention_heads=8, num_key_value_heads=4,
    head_dim=256, sliding_window=1024, sliding_window_pattern=6, rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0, rope_scaling={"factor": 8.0, "rope_type": "linear"}, rms_norm_eps=1e-06,
    query_pre_attn_scalar=256, vocab_size=262208, final_logit_softcapping=None, attn_logit_softcapping=None,
)  # fmt: skip
# google/gemma-3-1b-it, config.json (Gemma3ForCausalLM, text only): a different size, the wrong teacher.
GEMMA3_1B_IT = dict(
    num_hidden_layers=26, hidden_size=1152, intermediate_size=6912, num_attention_heads=4, num_key_value_heads=1,
    head_dim=256, sliding_window=512, sliding_window_pattern=6, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
    rope_scaling=None, rms_norm_eps=1e-06, query_pre_attn_scalar=256, vocab_size=262144,
    final_logit_softcapping=None, attn_logit_softcapping=None, max_position_embeddings=32768,
)  # fmt: skip
GEMMA3_4B_IT_VISION = dict(
    hidden_size=1152, image_size=896, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27,
    patch_size=14, vision_use_head=False,
)  # fmt: skip


def student_config(**text_changes) -> Gemma3Config:
    """google/gemma-3-4b-it's config (mm_tokens_per_image 256, image id 262144), built without weights."""
    return Gemma3Config(
        text_config={**GEMMA3_4B_IT_TEXT, **text_changes},
        vision_config=GEMMA3_4B_IT_VISION,
        mm_tokens_per_image=256,
        boi_token_index=255999,
        eoi_token_index=256000,
        image_token_index=262144,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [("final_logit_softcapping", 30.0), ("attn_logit_softcapping", 50.0), ("use_bidirectional_attention", True)],
)
def test_configs_the_teacher_cannot_follow_are_refused_before_loading(key, value):
    family = family_for("gemma3_vision")
    config = student_config(**{key: value})
    for check in (family.lineage, family.text_config):  # separate teacher / `self` (integration._check_teacher)
        with pytest.raises(Gemma3UnsupportedConfigError, match=rf"(?s){key} = {value!r}: .*Fix:"):
            check(config)
    family.lineage(student_config())  # the released config passes


def test_a_soft_capping_teacher_is_refused_when_the_distiller_is_built(case):
    teacher = make_gemma3_lm(seed=1, final_logit_softcapping=30.0)
    with pytest.raises(Gemma3UnsupportedConfigError, match=r"final_logit_softcapping = 30\.0"):
        distiller_for(case, teacher_model=teacher)


# --- lineage with the real published numbers --------------------------------------------------------------


def test_family_is_registered_for_swift_gemma3_vision():
    family = family_for("gemma3_vision")
    assert isinstance(family, Gemma3Family) and "gemma3_vision" in supported_model_types()
    assert family.vision_token_ids(student_config()) == (262144,)
    assert family_for(None, student_config()) is family


def test_gemma3_4b_it_matches_its_own_language_model_as_a_text_lm():
    """The realistic teacher: gemma-3-4b-it's (or -pt's) language model saved as a Gemma3ForCausalLM."""
    student = family_for("gemma3_vision").lineage(student_config())
    assert student["sliding_window"] == "1024 " + "SSSSSF" * 5 + "SSSS"
    check_lineage(student, lineage_of(Gemma3TextConfig(**GEMMA3_4B_IT_TEXT)))


def test_gemma3_1b_it_is_refused_with_every_mismatch_listed():
    student = family_for("gemma3_vision").lineage(student_config())
    with pytest.raises(LineageError) as info:
        check_lineage(student, lineage_of(Gemma3TextConfig(**GEMMA3_1B_IT)), "google/gemma-3-1b-it")
    message = str(info.value)
    for name, s, t in [
        ("layers", 34, 26),
        ("hidden_size", 2560, 1152),
        ("attention_heads", 8, 4),
        ("kv_heads", 4, 1),
    ]:
        assert f"{name:<16} student {s!s:<14} teacher {t}" in message
    assert f"{'sliding_window':<16} student 1024 SSSSSF" in message and "teacher 512 SSSSSF" in message
    assert "head_size" not in message and "norm_eps" not in message  # 256 and 1e-6 on both sides
    assert "google/gemma-3-1b-it" in message and "Fix:" in message


@pytest.mark.parametrize(
    "change", [{"sliding_window": 512}, {"sliding_window_pattern": 4}], ids=["window", "local-global-pattern"]
)
def test_a_different_sliding_pattern_is_a_lineage_mismatch(change):
    student = family_for("gemma3_vision").lineage(student_config())
    with pytest.raises(LineageError, match="sliding_window"):
        check_lineage(student, lineage_of(Gemma3TextConfig(**{**GEMMA3_4B_IT_TEXT, **change})))


@pytest.mark.parametrize(
    "change",
    [{"rope_local_base_freq": 20_000.0}, {"rope_theta": 500_000.0}, {"rope_scaling": None}],
    ids=["local-base", "global-base", "global-linear-scaling-dropped"],
)
def test_a_different_rotary_base_is_a_lineage_mismatch(change):
    student = family_for("gemma3_vision").lineage(student_config())
    with pytest.raises(LineageError, match="rotary_base"):
        check_lineage(student, lineage_of(Gemma3TextConfig(**{**GEMMA3_4B_IT_TEXT, **change})))
