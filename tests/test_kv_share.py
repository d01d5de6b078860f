"""METHOD.md invariants 1-5 on tiny Qwen2-VL and Qwen2.5-VL, with gradient checkpointing on, as swift trains.

The batch has three samples of different lengths (right padding): two images in one, none in another, one
in the third. The student runs in train mode with reentrant checkpointing (swift's default), so the K/V
the teacher reads come from the same forward that produces the student's logits.
"""

from __future__ import annotations

import pytest
import torch
from harness import context, distiller_for, student_logits, teacher_logits, text_positions, vl_setup
from vl_batches import conversations, make_batch

setup = vl_setup

SCOPES = ("image", "prompt", "all")


@pytest.mark.parametrize("scope", SCOPES)
def test_self_teacher_equals_student_at_every_text_position(setup, scope):
    """Invariant 1: teacher weights = student LM weights -> identical logits at text positions, any scope."""
    distiller = distiller_for(setup, scope=scope)
    batch = make_batch(setup["processor"], setup["student"])
    assert batch["image_grid_thw"].shape[0] == 3 and (batch["attention_mask"] == 0).any()  # 3 images, padding
    ctx = context(setup, batch)
    logits = student_logits(setup, batch)
    mask = text_positions(ctx)
    got = teacher_logits(distiller, ctx, mask)
    want = logits[mask].detach()
    assert got.shape == want.shape and got.shape[0] > 60
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5)


def test_sequence_positions_instead_of_student_positions_break_identity(setup):
    """The check above has teeth: text after an image sits at a compressed M-RoPE position."""
    distiller = distiller_for(setup)
    batch = make_batch(setup["processor"], setup["student"])
    ctx = context(setup, batch)
    logits = student_logits(setup, batch)
    ctx.rotary = torch.arange(ctx.input_ids.shape[1]).expand_as(ctx.input_ids)
    mask = text_positions(ctx)
    mask[1] = False  # the text-only row has sequence positions anyway
    diff = (teacher_logits(distiller, ctx, mask) - logits[mask].detach()).abs().max()
    assert diff > 1e-3


def test_no_image_sample_equals_plain_teacher_forward(setup):
    """Invariant 2: a text-only sample -> the KV-sharing teacher is just the teacher."""
    teacher = setup["other_teacher"]
    distiller = distiller_for(setup, teacher_model=teacher)
    batch = make_batch(setup["processor"], setup["student"])
    ctx = context(setup, batch)
    student_logits(setup, batch)
    mask = torch.zeros_like(ctx.valid)
    mask[1] = ctx.valid[1]  # the text-only row, every real token
    got = teacher_logits(distiller, ctx, mask)
    n = int(ctx.valid[1].sum())
    with torch.no_grad():
        plain = teacher(input_ids=ctx.input_ids[1:2, :n]).logits[0]
    torch.testing.assert_close(got, plain, rtol=1e-4, atol=2e-5)


def test_teacher_sees_the_image(setup):
    """Invariant 3: a different teacher's text logits change with the image, and only after it."""
    distiller = distiller_for(setup, teacher_model=setup["other_teacher"])
    results = []
    for seed in (0, 100):
        convs, images = conversations(images_seed=seed)
        batch = make_batch(setup["processor"], setup["student"], convs, images)
        ctx = context(setup, batch)
        student_logits(setup, batch)
        results.append(teacher_logits(distiller, ctx, text_positions(ctx)))
    a, b = results
    first_image = int((ctx.vision[0]).nonzero()[0])
    before = int(text_positions(ctx)[0, :first_image].sum())  # text positions of row 0 before its first image
    torch.testing.assert_close(a[:before], b[:before])  # causal: the image cannot change what comes before it
    assert (a[before:] - b[before:]).abs().max() > 1e-3


@pytest.mark.parametrize("scope", SCOPES)
def test_compact_teacher_equals_full_sequence_teacher(setup, scope):
    """Invariant 4: computing only the positions the logits depend on changes nothing."""
    teacher = setup["other_teacher"]
    batch = make_batch(setup["processor"], setup["student"])
    labels_next = torch.roll(batch["labels"], -1, dims=1) != -100  # positions whose logit the loss reads
    results = []
    for compact in (True, False):
        distiller = distiller_for(setup, teacher_model=teacher, scope=scope, compact=compact)
        ctx = context(setup, batch)
        student_logits(setup, batch)
        results.append(teacher_logits(distiller, ctx, labels_next & ctx.valid))
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=2e-5)


def test_zero_weight_sample_contributes_nothing(setup):
    """Invariant 5a: w = 0 -> that sample's distillation term is exactly absent (value and gradient)."""
    distiller = distiller_for(setup, teacher_model=setup["other_teacher"])
    batch = make_batch(setup["processor"], setup["student"])
    results = {}
    for weights in ((1.0, 0.0, 1.0), (1.0, 1.0, 1.0)):
        ctx = context(setup, batch, weights)
        logits = student_logits(setup, batch).detach().requires_grad_(True)
        loss, stats = distiller.loss(logits, batch["labels"], ctx, num_items_in_batch=100)
        loss.backward()
        results[weights] = (loss.item(), logits.grad, stats)
    loss0, grad0, stats0 = results[(1.0, 0.0, 1.0)]
    loss1, grad1, _ = results[(1.0, 1.0, 1.0)]
    n_row1 = int((torch.roll(batch["labels"][1], -1) != -100).sum())
    assert stats0.kd.numel() == stats0.ce.numel() - n_row1  # no distillation token from row 1
    # Row 1's gradient is CE only: its softmax minus the one-hot target, over N.
    ctx = context(setup, batch, (0.0, 0.0, 0.0))
    logits = student_logits(setup, batch, capture=False).detach().requires_grad_(True)
    ce_only, _ = distiller.loss(logits, batch["labels"], ctx, num_items_in_batch=100)
    ce_only.backward()
    torch.testing.assert_close(grad0[1], logits.grad[1])
    assert (grad1[1] - logits.grad[1]).abs().max() > 0  # with w = 1 the teacher does pull on row 1
    assert loss1 > loss0


def test_all_vision_batch_runs_no_teacher_forward(setup):
    """Invariant 5b: every w = 0 -> no capture needed, no teacher forward, loss = plain CE."""
    distiller = distiller_for(setup, teacher_model=setup["other_teacher"])
    batch = make_batch(setup["processor"], setup["student"])
    ctx = context(setup, batch, (0.0, 0.0, 0.0))
    assert not distiller.will_distill(ctx)
    logits = student_logits(setup, batch, capture=False).detach()
    before = distiller.teacher_forwards
    loss, stats = distiller.loss(logits, batch["labels"], ctx)
    assert distiller.teacher_forwards == before and stats.kd.numel() == 0 and not stats.teacher_ran
    targets = torch.roll(batch["labels"], -1, dims=1)
    want = torch.nn.functional.cross_entropy(logits.double().flatten(0, 1), targets.flatten(), ignore_index=-100)
    torch.testing.assert_close(loss.double(), want, rtol=1e-6, atol=1e-6)
