"""Qwen2-VL and Qwen2.5-VL specifics (the invariants themselves run for every family in test_invariants.py).

The batch has three samples of different lengths (right padding): two images in one, none in another, one
in the third. The student runs in train mode with reentrant checkpointing (swift's default), so the K/V
the teacher reads come from the same forward that produces the student's logits.
"""

from __future__ import annotations

import pytest

from tests.support.cases.qwen import QWEN_FAMILIES, qwen_case
from tests.support.invariants import check_sequence_positions_break_identity


@pytest.fixture(scope="module", params=QWEN_FAMILIES)
def case(request, tokenizer):
    return qwen_case(request.param, tokenizer)


def test_batch_has_several_images_padding_and_a_text_only_row(case):
    batch = case.batch()
    assert batch["image_grid_thw"].shape[0] == 3 and (batch["attention_mask"] == 0).any()
    assert not (batch["input_ids"][1] == 151655).any()


def test_sequence_positions_instead_of_student_positions_break_identity(case):
    check_sequence_positions_break_identity(case)
