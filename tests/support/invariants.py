"""docs/METHOD.md's invariants 1-5 as checks on any ``FamilyCase``; each family's test module runs them all."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.support.harness import FamilyCase, context, distiller_for, student_logits, teacher_logits, text_positions


def _shared_vocab_logits(case: FamilyCase, logits: torch.Tensor, distiller) -> torch.Tensor:
    return logits[..., : distiller.shared_vocab]


def check_self_teacher_identity(case: FamilyCase, scope: str) -> None:
    """Invariant 1: teacher weights = student LM weights -> identical logits at every text position."""
    distiller = distiller_for(case, scope=scope)
    batch = case.batch()
    ctx = context(case, batch)
    assert (~ctx.valid).any(), "the batch must be padded"
    assert ctx.vision[0].any() and not ctx.vision[case.text_only_row].any()
    logits = student_logits(case, batch)
    mask = text_positions(ctx)
    got = teacher_logits(distiller, ctx, mask)
    want = _shared_vocab_logits(case, logits[mask].detach(), distiller)
    assert got.shape[0] > 20
    torch.testing.assert_close(got[:, : want.shape[-1]], want, rtol=1e-4, atol=2e-5)


def check_no_image_equals_plain_teacher(case: FamilyCase) -> None:
    """Invariant 2: on a sample without images the KV-sharing teacher is just the teacher."""
    teacher = case.other_teacher
    distiller = distiller_for(case, teacher_model=teacher)
    batch = case.batch()
    ctx = context(case, batch)
    student_logits(case, batch)
    row = case.text_only_row
    mask = torch.zeros_like(ctx.valid)
    mask[row] = ctx.valid[row]
    got = teacher_logits(distiller, ctx, mask)
    n = int(ctx.valid[row].sum())
    with torch.no_grad():
        plain = teacher(input_ids=ctx.input_ids[row : row + 1, :n]).logits[0]
    torch.testing.assert_close(got, plain, rtol=1e-4, atol=2e-5)


def check_teacher_sees_the_image(case: FamilyCase) -> None:
    """Invariant 3: a different teacher's text logits change with the image, and only after it."""
    distiller = distiller_for(case, teacher_model=case.other_teacher)
    results = []
    for seed in (0, 100):
        batch = case.batch(images_seed=seed)
        ctx = context(case, batch)
        student_logits(case, batch)
        results.append(teacher_logits(distiller, ctx, text_positions(ctx)))
    a, b = results
    assert a.shape == b.shape
    first_image = int(ctx.vision[0].nonzero()[0])
    before = int(text_positions(ctx)[0, :first_image].sum())
    torch.testing.assert_close(a[:before], b[:before])  # causal: the image cannot change what comes before it
    assert (a[before:] - b[before:]).abs().max() > 1e-3


def check_compact_equals_full(case: FamilyCase, scope: str) -> None:
    """Invariant 4: the teacher computing only what the loss reads equals the full-sequence teacher."""
    batch = case.batch()
    needed = torch.roll(batch["labels"], -1, dims=1) != -100
    results = []
    for compact in (True, False):
        distiller = distiller_for(case, teacher_model=case.other_teacher, scope=scope, compact=compact)
        ctx = context(case, batch)
        student_logits(case, batch)
        results.append(teacher_logits(distiller, ctx, needed & ctx.valid))
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=2e-5)


def check_selection_is_exact(case: FamilyCase) -> None:
    """Invariant 5: w = 0 contributes nothing (value and gradient); all w = 0 runs no teacher forward."""
    distiller = distiller_for(case, teacher_model=case.other_teacher)
    batch = case.batch()
    grads = {}
    for weights in ((1.0, 0.0, 1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)):
        ctx = context(case, batch, weights)
        capture = distiller.will_distill(ctx)
        logits = student_logits(case, batch, capture=capture).detach().requires_grad_(True)
        before = distiller.teacher_forwards
        loss, stats = distiller.loss(logits, batch["labels"], ctx, num_items_in_batch=100)
        loss.backward()
        grads[weights] = logits.grad
        if weights == (0.0, 0.0, 0.0):
            assert not capture and distiller.teacher_forwards == before and stats.kd.numel() == 0
            targets = torch.roll(batch["labels"], -1, dims=1)
            want = F.cross_entropy(logits.double().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
            torch.testing.assert_close(loss.double(), want / 100, rtol=1e-6, atol=1e-6)
    row = case.text_only_row
    torch.testing.assert_close(grads[(1.0, 0.0, 1.0)][row], grads[(0.0, 0.0, 0.0)][row])
    assert (grads[(1.0, 1.0, 1.0)][row] - grads[(0.0, 0.0, 0.0)][row]).abs().max() > 0


def check_sequence_positions_break_identity(case: FamilyCase) -> None:
    """M-RoPE families: the identity check has teeth, since text after an image sits at a compressed position."""
    distiller = distiller_for(case)
    batch = case.batch()
    ctx = context(case, batch)
    logits = student_logits(case, batch)
    ctx.rotary = torch.arange(ctx.input_ids.shape[1]).expand_as(ctx.input_ids)
    mask = text_positions(ctx)
    mask[case.text_only_row] = False  # the text-only row has sequence positions anyway
    diff = (teacher_logits(distiller, ctx, mask) - logits[mask].detach()).abs().max()
    assert diff > 1e-3
