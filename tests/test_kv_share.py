"""METHOD.md invariants 1-5 on tiny Qwen2-VL and Qwen2.5-VL, with gradient checkpointing on, as swift trains.

The batch has three samples of different lengths (right padding): two images in one, none in another, one
in the third. The student runs in train mode with reentrant checkpointing (swift's default), so the K/V
the teacher reads come from the same forward that produces the student's logits.
"""

from __future__ import annotations

import pytest
import torch
from cases_qwen import QWEN_FAMILIES, qwen_case
from harness import SCOPES, context, distiller_for, student_logits, teacher_logits, text_positions
from invariants import (
    check_compact_equals_full,
    check_no_image_equals_plain_teacher,
    check_selection_is_exact,
    check_self_teacher_identity,
    check_teacher_sees_the_image,
)


@pytest.fixture(scope="module", params=QWEN_FAMILIES)
def case(request, tokenizer):
    return qwen_case(request.param, tokenizer)


@pytest.mark.parametrize("scope", SCOPES)
def test_self_teacher_equals_student_at_every_text_position(case, scope):
    check_self_teacher_identity(case, scope)


def test_batch_has_several_images_padding_and_a_text_only_row(case):
    batch = case.batch()
    assert batch["image_grid_thw"].shape[0] == 3 and (batch["attention_mask"] == 0).any()
    assert not (batch["input_ids"][1] == 151655).any()


def test_sequence_positions_instead_of_student_positions_break_identity(case):
    """The identity check has teeth: text after an image sits at a compressed M-RoPE position."""
    distiller = distiller_for(case)
    batch = case.batch()
    ctx = context(case, batch)
    logits = student_logits(case, batch)
    ctx.rotary = torch.arange(ctx.input_ids.shape[1]).expand_as(ctx.input_ids)
    mask = text_positions(ctx)
    mask[1] = False  # the text-only row has sequence positions anyway
    diff = (teacher_logits(distiller, ctx, mask) - logits[mask].detach()).abs().max()
    assert diff > 1e-3


def test_no_image_sample_equals_plain_teacher_forward(case):
    check_no_image_equals_plain_teacher(case)


def test_teacher_sees_the_image(case):
    check_teacher_sees_the_image(case)


@pytest.mark.parametrize("scope", SCOPES)
def test_compact_teacher_equals_full_sequence_teacher(case, scope):
    check_compact_equals_full(case, scope)


def test_selection_is_exact(case):
    check_selection_is_exact(case)
