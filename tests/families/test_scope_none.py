"""``kv_share.scope: none``, the blind-teacher ablation, on a tiny student of every supported family.

Its definition (METHOD.md): the vision positions are masked out of the teacher's attention entirely, neither the
student's K/V nor the teacher's own computation there, so the teacher conditions on the text alone. The
independent reference is therefore a plain forward of the text-only teacher on each row with its vision tokens
deleted, at the student's rotary positions of the tokens that remain (the teacher always uses those).
"""

from __future__ import annotations

import pytest
import torch

from swift_lingudistill.config import ConfigError, config_from_dict
from tests.support.cases import CASE_BUILDERS
from tests.support.harness import context, distiller_for, student_logits, teacher_logits, text_positions


@pytest.fixture(scope="module", params=sorted(CASE_BUILDERS))
def case(request):
    return CASE_BUILDERS[request.param]()


def _blind_logits(case, images_seed: int = 0, compact: bool = True):
    distiller = distiller_for(case, teacher_model=case.other_teacher, scope="none", compact=compact)
    batch = case.batch(images_seed=images_seed)
    ctx = context(case, batch)
    student_logits(case, batch)
    mask = text_positions(ctx)
    return teacher_logits(distiller, ctx, mask), ctx, mask


def test_blind_teacher_is_the_plain_teacher_on_the_text_without_the_image(case):
    if getattr(getattr(case.other_teacher, "config", None), "sliding_window", None):
        # Gemma 3 slides a window over the student's sequence positions, under every scope (the blind teacher
        # differs from the image-reading one only by the masked image); a forward on the shortened text would
        # count the window without the image, so it is not this reference. The other checks here cover it.
        pytest.skip("sliding-window attention counts the student's sequence positions; see the comment")
    got, ctx, mask = _blind_logits(case)
    image_rows = [row for row in range(ctx.input_ids.shape[0]) if ctx.vision[row].any()]
    assert len(image_rows) >= 2
    want = []
    for row in range(ctx.input_ids.shape[0]):
        kept = mask[row]
        with torch.no_grad():
            plain = case.other_teacher(
                input_ids=ctx.input_ids[row, kept][None], position_ids=ctx.rotary[row, kept][None]
            ).logits[0]
        want.append(plain)
    torch.testing.assert_close(got, torch.cat(want), rtol=1e-4, atol=2e-5)


def test_blind_teacher_does_not_change_with_the_image(case):
    a, _, _ = _blind_logits(case, images_seed=0)
    b, _, _ = _blind_logits(case, images_seed=100)
    assert torch.equal(a, b)
    # The two batches really differ in their pictures (and the image-reading teacher sees that: invariant 3,
    # tests/families/test_invariants.py), with the same tokens.
    first, second = case.batch(images_seed=0), case.batch(images_seed=100)
    assert torch.equal(first["input_ids"], second["input_ids"])
    assert not torch.equal(first["pixel_values"], second["pixel_values"])


def test_blind_compact_teacher_equals_full_sequence_teacher(case):
    """Invariant 4 under scope none: the compact plan skips nothing the full plan reads."""
    compact, _, _ = _blind_logits(case, compact=True)
    full, _, _ = _blind_logits(case, compact=False)
    torch.testing.assert_close(compact, full, rtol=1e-4, atol=2e-5)


def test_scope_none_is_a_documented_config_value():
    config = config_from_dict({"teacher": {"model": "x"}, "kv_share": {"scope": "none"}})
    assert config.kv_share.scope == "none"
    with pytest.raises(ConfigError, match="'none'"):
        config_from_dict({"teacher": {"model": "x"}, "kv_share": {"scope": "blind"}})
