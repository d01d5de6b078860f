"""The chunked teacher attention (the default) against the dense-mask reference: the same outputs and gradients
for padded rows, packed segments, every scope's sharing pattern, sliding windows, grouped-query heads and odd
shapes, with chunks small enough to cut rows in every way; the chunk masks are the dense mask's blocks."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from swift_lingudistill import teacher_attention
from swift_lingudistill.kv_share import build_plan
from swift_lingudistill.teacher_attention import attend, mask_block


def random_plan(seed: int, packed: bool, compact: bool, share: float):
    """A plan for 3 right-padded rows of length 23 (one packed into 3 sequences when ``packed``)."""
    gen = torch.Generator().manual_seed(seed)
    b, seq_len = 3, 23
    lengths = torch.tensor([23, 17, 9])
    valid = torch.arange(seq_len)[None] < lengths[:, None]  # [B, L]
    shared = (torch.rand(b, seq_len, generator=gen) < share) & valid
    logit_mask = (torch.rand(b, seq_len, generator=gen) < 0.5) & valid
    logit_mask[1] = False  # a row without any needed logit is skipped by the plan
    segment = None
    if packed:
        segment = torch.zeros(b, seq_len, dtype=torch.long)
        segment[0, 8:] = 1
        segment[0, 15:] = 2
    plan, _ = build_plan(logit_mask, shared, valid, segment, compact=compact)
    return plan


def inputs(plan, heads: int, kv_heads: int, dim: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    rows, n_q, seq_len = plan.q_pos.shape[0], plan.q_pos.shape[1], plan.shared.shape[1]
    query = torch.randn(rows, heads, n_q, dim, generator=gen).requires_grad_()
    student = [torch.randn(rows, kv_heads, seq_len, dim, generator=gen).requires_grad_() for _ in range(2)]
    own = [torch.randn(rows, kv_heads, n_q, dim, generator=gen).requires_grad_() for _ in range(2)]
    return query, student, own


@pytest.mark.parametrize("window", [None, 4], ids=["full", "sliding4"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("compact", [True, False], ids=["compact", "full-sequence"])
@pytest.mark.parametrize("share", [0.0, 0.4, 1.0], ids=["share0", "share40", "share-all"])
@pytest.mark.parametrize("mask_elements", [1, 37, 1 << 20], ids=["rows1", "elems37", "one-chunk"])
def test_chunked_equals_dense(monkeypatch, mask_elements, share, compact, packed, window):
    monkeypatch.setattr(teacher_attention, "MASK_ELEMENTS", mask_elements)
    plan = random_plan(3, packed, compact, share)
    query, student, own = inputs(plan, heads=4, kv_heads=2, dim=5, seed=1)
    results = []
    for dense in (True, False):
        out = attend(query, tuple(student), tuple(own), plan, sliding_window=window, scale=0.3, dense=dense)
        weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        grads = torch.autograd.grad((out * weights).sum(), [query, *student, *own])
        results.append((out, grads))
    (want, want_grads), (got, got_grads) = results
    assert not want.isnan().any()
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert_close(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window", [None, 3])
def test_chunk_masks_are_blocks_of_the_dense_mask(window):
    """Each chunk's mask equals the dense mask's rows restricted to the keys the chunk keeps, and every key the
    chunk drops is masked for all its rows (the trimming loses nothing)."""
    plan = random_plan(7, packed=True, compact=True, share=0.3)
    dense = plan.mask(window)[:, 0]  # [B', Lq, L + Lq]
    n_q, seq_len = plan.q_pos.shape[1], plan.shared.shape[1]
    last = torch.where(plan.q_valid, plan.q_pos, -1)
    for q0 in range(0, n_q, 3):
        q1 = min(q0 + 3, n_q)
        k_end = int(last[:, q0:q1].max()) + 1
        block = mask_block(plan, q0, q1, k_end, q1, window)[:, 0]  # [B', c, k_end + q1]
        rows = dense[:, q0:q1]
        assert torch.equal(block[:, :, :k_end], rows[:, :, :k_end])
        assert torch.equal(block[:, :, k_end:], rows[:, :, seq_len : seq_len + q1])
        assert not rows[:, :, k_end:seq_len].any() and not rows[:, :, seq_len + q1 :].any()


def test_empty_plan_and_bf16():
    plan = random_plan(5, packed=False, compact=True, share=0.5)
    query, student, own = inputs(plan, heads=2, kv_heads=2, dim=8, seed=2)
    to_bf16 = [t.detach().bfloat16() for t in (query, *student, *own)]
    dense = attend(to_bf16[0], tuple(to_bf16[1:3]), tuple(to_bf16[3:]), plan, dense=True)
    chunked = attend(to_bf16[0], tuple(to_bf16[1:3]), tuple(to_bf16[3:]), plan)
    assert chunked.dtype == torch.bfloat16
    assert_close(chunked.float(), dense.float(), rtol=2e-2, atol=2e-2)
    empty, _ = build_plan(torch.zeros(2, 5, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.bool),
                          torch.ones(2, 5, dtype=torch.bool))  # fmt: skip
    q = torch.zeros(0, 2, 0, 4)
    kv = torch.zeros(0, 2, 5, 4)
    assert attend(q, (kv, kv), (q, q), empty).shape == (0, 2, 0, 4)
