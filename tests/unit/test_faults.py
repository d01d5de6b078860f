"""Faults in the teacher never become a silent corrupt update: out of memory is an error with the fix, a
non-finite teacher drops that batch's distillation term (CE only) and says so."""

from __future__ import annotations

import pytest
import torch

from swift_lingudistill.distiller import TeacherOutOfMemoryError
from tests.support.cases.qwen import qwen_case
from tests.support.harness import context, distiller_for, student_logits


@pytest.fixture(scope="module")
def case(tokenizer):
    return qwen_case("qwen2_5_vl", tokenizer)


def test_teacher_out_of_memory_is_an_error_that_names_the_fix(case, monkeypatch):
    distiller = distiller_for(case, teacher_model=case.other_teacher)
    batch = case.batch()
    ctx = context(case, batch)
    logits = student_logits(case, batch).detach()

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(distiller.teacher, "hidden_states", out_of_memory)
    with pytest.raises(TeacherOutOfMemoryError) as info:
        distiller.loss(logits, batch["labels"], ctx)
    message = str(info.value)
    assert "ran out of memory on a batch of 3 distilled rows" in message
    for fix in ("teacher.dtype: bfloat16", "teacher.offload: true", "--deepspeed zero3"):
        assert fix in message


def test_other_teacher_errors_are_not_disguised(case, monkeypatch):
    distiller = distiller_for(case, teacher_model=case.other_teacher)
    batch = case.batch()
    ctx = context(case, batch)
    logits = student_logits(case, batch).detach()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(distiller.teacher, "hidden_states", broken)
    with pytest.raises(RuntimeError, match=r"^boom$"):
        distiller.loss(logits, batch["labels"], ctx)


def test_non_finite_teacher_trains_that_batch_on_cross_entropy_only(case):
    teacher = type(case.other_teacher)(case.other_teacher.config)
    teacher.load_state_dict(case.other_teacher.state_dict())
    with torch.no_grad():
        teacher.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    distiller = distiller_for(case, teacher_model=teacher)
    batch = case.batch()
    weights = (1.0, 1.0, 1.0)
    ctx = context(case, batch, weights)
    logits = student_logits(case, batch).detach().requires_grad_(True)
    loss, stats = distiller.loss(logits, batch["labels"], ctx, num_items_in_batch=50)
    loss.backward()
    assert stats.teacher_ran and stats.kd_skipped and stats.kd.numel() == 0
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    plain = logits.detach().requires_grad_(True)
    ce_only, _ = distiller.loss(plain, batch["labels"], context(case, batch, (0.0, 0.0, 0.0)), num_items_in_batch=50)
    torch.testing.assert_close(loss, ce_only)
