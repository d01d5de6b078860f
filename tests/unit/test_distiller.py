"""The step loss equals docs/METHOD.md's formula, computed independently in float64 on the full vocabulary.

    L = ( sum_t CE_t  +  lambda * sum_{t in distilled samples} w_i * tau^2 * D_t ) / N

The reference takes its teacher logits from the full-sequence teacher (every position computed, shared
K/V replaced), so it also checks that the compact teacher's rows line up with the student's tokens.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from swift_lingudistill.distiller import kept_positions
from tests.support.cases.qwen import qwen_case
from tests.support.harness import context, distiller_for, student_logits, teacher_logits


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl"])
def setup(request, tokenizer):
    return qwen_case(request.param, tokenizer)


WEIGHTS = (1.0, 0.5, 0.0)


def reference_divergence(s: torch.Tensor, t: torch.Tensor, loss: dict) -> torch.Tensor:
    """[n] D(p_T || p_S) in float64 from full-vocabulary logits, written from the definitions."""
    tau = loss.get("temperature", 1.0)
    ls, lt = F.log_softmax(s.double() / tau, -1), F.log_softmax(t.double() / tau, -1)
    divergence = loss.get("divergence", "forward_kl")
    if loss.get("top_k"):
        top = t.double().topk(loss["top_k"], dim=-1)
        lt_k = F.log_softmax(top.values / tau, -1)
        return (lt_k.exp() * (lt_k - ls.gather(-1, top.indices))).sum(-1)
    if divergence == "forward_kl":
        return (lt.exp() * (lt - ls)).sum(-1)
    if divergence == "reverse_kl":
        return (ls.exp() * (ls - lt)).sum(-1)
    beta = loss.get("beta", 0.5)
    m = beta * lt.exp() + (1 - beta) * ls.exp()
    return beta * (lt.exp() * (lt - m.log())).sum(-1) + (1 - beta) * (ls.exp() * (ls - m.log())).sum(-1)


def reference_loss(logits, labels, ctx, teacher_at, loss: dict, n_items: float, loss_scale=None) -> torch.Tensor:
    """``teacher_at``: [B, L, V] teacher logits by sequence position (only distilled positions are read)."""
    lam, tau = loss.get("lambda", 1.0), loss.get("temperature", 1.0)
    alpha = loss.get("alpha") if loss.get("mode") == "replace" else None
    positions = kept_positions(ctx.logits_to_keep, ctx.input_ids.shape[1], logits.device)
    total = torch.zeros((), dtype=torch.float64)
    targets = torch.roll(labels, -1, dims=-1)
    for b in range(logits.shape[0]):
        w = float(ctx.sample_weight[b])
        for k in range(logits.shape[1]):
            if targets[b, k] == -100:
                continue
            ce = F.cross_entropy(logits[b, k].double()[None], targets[b, k][None])
            ce_weight = 1.0 - alpha * w if alpha is not None else 1.0
            if loss_scale is not None:
                ce_weight *= float(loss_scale[b, k])
            total = total + ce_weight * ce
            if w > 0 and lam > 0:
                d = reference_divergence(logits[b, k][None], teacher_at[b, positions[k]][None], loss)[0]
                total = total + lam * w * (alpha if alpha is not None else 1.0) * tau**2 * d
    return total / n_items


def full_teacher_logits(setup, batch, ctx) -> torch.Tensor:
    """[B, L, V] teacher logits at every position, from the full-sequence (non-compact) teacher."""
    distiller = distiller_for(setup, teacher_model=setup.other_teacher, compact=False)
    student_logits(setup, batch)
    every = ctx.valid.clone()
    rows = teacher_logits(distiller, ctx, every)
    out = torch.zeros(*every.shape, rows.shape[-1])
    out[every] = rows
    return out


LOSSES = [
    {},
    {"temperature": 2.0, "lambda": 0.3},
    {"divergence": "reverse_kl"},
    {"divergence": "jsd", "beta": 0.3},
    {"top_k": 5, "temperature": 0.7},
    {"mode": "replace", "alpha": 0.6},
]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
def test_step_loss_matches_the_formula(setup, loss):
    batch = setup.batch()
    ctx = context(setup, batch, WEIGHTS)
    teacher_at = full_teacher_logits(setup, batch, ctx)
    distiller = distiller_for(setup, teacher_model=setup.other_teacher, loss=loss)
    logits = student_logits(setup, batch).detach()
    got, stats = distiller.loss(logits, batch["labels"], ctx, num_items_in_batch=37)
    want = reference_loss(logits, batch["labels"], ctx, teacher_at, loss, 37)
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=1e-6)
    assert stats.teacher_ran and stats.distilled.tolist() == [1.0, 1.0, 0.0]


def test_cut_logits_as_swift_passes_them(setup):
    """swift's `use_logits_to_keep`: an int suffix (batch > 1) and a bool mask (batch of one) give the same loss."""
    batch = setup.batch()
    ctx = context(setup, batch, WEIGHTS)
    distiller = distiller_for(setup, teacher_model=setup.other_teacher)
    logits = student_logits(setup, batch).detach()
    full, _ = distiller.loss(logits, batch["labels"], ctx, num_items_in_batch=50)

    first = int((batch["labels"] != -100).int().argmax(-1).min())
    keep = batch["labels"].shape[1] - first + 1  # swift's prepare_logits_to_keep, batch > 1
    ctx.logits_to_keep = keep
    student_logits(setup, batch)
    cut, _ = distiller.loss(logits[:, -keep:], batch["labels"][:, -keep:], ctx, num_items_in_batch=50)
    torch.testing.assert_close(cut, full)

    row = 2  # batch of one: a bool mask of the positions whose logit is supervised, plus the last
    single = {k: v[row : row + 1] for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
    single["position_ids"] = batch["position_ids"][:, row : row + 1]
    single["image_grid_thw"] = batch["image_grid_thw"][2:3]
    single["pixel_values"] = batch["pixel_values"][-int(batch["image_grid_thw"][2].prod()) :]
    ctx1 = context(setup, single, WEIGHTS[row : row + 1] if WEIGHTS[row] else (1.0,))
    logits1 = student_logits(setup, single).detach()
    whole, _ = distiller.loss(logits1, single["labels"], ctx1, num_items_in_batch=9)
    mask = single["labels"][0] != -100
    ctx1.logits_to_keep = F.pad(mask[1:], (0, 1), value=True)
    labels_cut = F.pad(single["labels"][:, mask], (1, 0), value=-100)
    student_logits(setup, single)
    cut1, _ = distiller.loss(logits1[:, ctx1.logits_to_keep], labels_cut, ctx1, num_items_in_batch=9)
    torch.testing.assert_close(cut1, whole)


def test_loss_scale_weighs_cross_entropy_only(setup):
    batch = setup.batch()
    ctx = context(setup, batch, WEIGHTS)
    teacher_at = full_teacher_logits(setup, batch, ctx)
    distiller = distiller_for(setup, teacher_model=setup.other_teacher)
    logits = student_logits(setup, batch).detach()
    scale = torch.rand(batch["labels"].shape, generator=torch.Generator().manual_seed(0)) * 2
    got, _ = distiller.loss(logits, batch["labels"], ctx, num_items_in_batch=40, loss_scale=scale.flatten())
    want = reference_loss(logits, batch["labels"], ctx, teacher_at, {}, 40, loss_scale=scale)
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=1e-6)


def test_default_normaliser_counts_supervised_tokens(setup):
    batch = setup.batch()
    ctx = context(setup, batch, WEIGHTS)
    distiller = distiller_for(setup, teacher_model=setup.other_teacher)
    logits = student_logits(setup, batch).detach()
    n = int((torch.roll(batch["labels"], -1, dims=-1) != -100).sum())
    implicit, _ = distiller.loss(logits, batch["labels"], ctx)
    student_logits(setup, batch)
    explicit, _ = distiller.loss(logits, batch["labels"], ctx, num_items_in_batch=torch.tensor(n))
    torch.testing.assert_close(implicit, explicit)


def test_gradient_reaches_student_kv_only_when_not_detached(setup):
    """detach: false sends the distillation gradient through the teacher into the student's shared K/V."""
    student = setup.student
    student.gradient_checkpointing_disable()  # reentrant checkpointing would run the forward without grad
    try:
        norms = {}
        for detach in (True, False):
            distiller = distiller_for(setup, teacher_model=setup.other_teacher)
            distiller.config.kv_share.detach = detach
            batch = setup.batch()
            ctx = context(setup, batch, (1.0, 0.0, 0.0))
            logits = student_logits(setup, batch)
            frozen = logits.detach().requires_grad_(True)  # cut the direct path: only the K/V path is left
            loss, _ = distiller.loss(frozen, batch["labels"], ctx)
            student.zero_grad()
            if loss.requires_grad and loss.grad_fn is not None:
                loss.backward()
            visual = [p.grad for p in student.model.visual.parameters() if p.grad is not None]
            norms[detach] = sum(float(g.abs().sum()) for g in visual)
        assert norms[True] == 0.0 and norms[False] > 0.0
    finally:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        student.zero_grad()


def test_one_step_as_the_trainer_drives_it(setup):
    """start_step fills the teacher's positions and captures the student's K/V only when the batch distils; the
    loss finishes the capture (every layer seen); end_step drops it. The loss equals the harness path's."""
    batch = setup.batch()
    distiller = distiller_for(setup, teacher_model=setup.other_teacher)
    nothing = context(setup, batch, (0.0, 0.0, 0.0))
    nothing.rotary = nothing.vision = None
    distiller.start_step(nothing, batch, setup.student)
    assert nothing.rotary is None and nothing.vision is None and distiller.router.phase is None

    ctx = context(setup, batch, WEIGHTS)
    ctx.rotary = ctx.vision = None
    distiller.start_step(ctx, batch, setup.student)
    ids = batch["input_ids"]
    assert distiller.router.phase == "capture"
    assert torch.equal(ctx.vision, (ids == 151655) | (ids == 151656))
    assert torch.equal(ctx.rotary, batch["position_ids"][0])  # M-RoPE: the temporal row of text tokens
    logits = setup.student(**{k: batch[k] for k in setup.forward_keys if k in batch}).logits.detach()
    got, _ = distiller.loss(logits, batch["labels"], ctx, num_items_in_batch=37)
    assert distiller.router.phase is None
    assert len(distiller.router.captured) == distiller.router.num_student_layers
    distiller.end_step()
    assert distiller.router.captured == {}

    want, _ = distiller.loss(student_logits(setup, batch).detach(), batch["labels"], context(setup, batch, WEIGHTS),
                             num_items_in_batch=37)  # fmt: skip
    torch.testing.assert_close(got, want)
