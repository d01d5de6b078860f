"""The teacher's attention over (the student's K/V ++ its own), query chunk by query chunk.

One teacher layer attends from its Lq query entries (its own positions and the logit positions, ``kv_share``'s
plan) to L student positions plus its Lq own entries. The mask that says who sees whom (causal by position, the
packed segment, shared vs own, a sliding window) has no kernel-friendly shape, so it is materialized; as one
boolean ``[B', 1, Lq, L + Lq]`` tensor (the reference path, ``dense=True``) that is Lq x (L + Lq) bytes, several
times over while it is built and as the float bias SDPA turns it into: about 0.5 GB per layer call for a packed
16k row, growing with the square of the length.

The default path walks the queries in chunks sized so that one chunk's mask has at most ``MASK_ELEMENTS``
entries, and gives each chunk only the keys it can see: student positions up to the chunk's last query position
and own entries up to the chunk's last entry (entries are in position order, so later ones are causally
masked). Softmax rows are independent, so each chunk's output is the dense path's rows, to float rounding;
the mask never exceeds one chunk's, and the skipped keys make it faster too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["MASK_ELEMENTS", "attend", "mask_block"]

# Mask entries per query chunk: 8M booleans (32 MB as SDPA's float bias), whatever the sequence length.
MASK_ELEMENTS = 1 << 23


def mask_block(plan: Any, q0: int, q1: int, k_end: int, own_end: int, sliding_window: int | None) -> torch.Tensor:
    """[B', 1, q1 - q0, k_end + own_end] bool: query entries q0:q1 -> (student K/V at positions < k_end, then
    the teacher's entries < own_end). ``plan`` is a ``kv_share.TeacherPlan``."""
    device = plan.q_pos.device
    q_pos = plan.q_pos[:, q0:q1, None]  # [B', c, 1]
    q_seg = plan.segment.gather(1, plan.q_pos[:, q0:q1])[:, :, None]  # [B', c, 1]
    valid_q = plan.q_valid[:, q0:q1, None]  # [B', c, 1]

    k_pos = torch.arange(k_end, device=device)[None, None, :]  # [1, 1, k]
    to_student = plan.shared[:, None, :k_end] & (k_pos <= q_pos)  # [B', c, k]
    to_student &= plan.segment[:, None, :k_end] == q_seg
    to_student &= valid_q
    own_pos = plan.q_pos[:, None, :own_end]  # [B', 1, o]
    own_seg = plan.segment.gather(1, plan.q_pos[:, :own_end])[:, None, :]  # [B', 1, o]
    to_own = plan.q_own[:, None, :own_end] & (own_pos <= q_pos)  # [B', c, o]
    to_own &= own_seg == q_seg
    to_own &= valid_q
    if sliding_window is not None:
        to_student &= k_pos > q_pos - sliding_window
        to_own &= own_pos > q_pos - sliding_window
    # A padding entry attends to itself only, so its softmax row is never empty (no NaN); it is dropped.
    entry = torch.arange(q0, q1, device=device)[None, :, None]  # [1, c, 1]
    to_own |= (~plan.q_valid[:, q0:q1, None]) & (torch.arange(own_end, device=device)[None, None, :] == entry)
    return torch.cat([to_student, to_own], dim=2)[:, None]  # [B', 1, c, k + o]


def attend(
    query: torch.Tensor,
    student_kv: tuple[torch.Tensor, torch.Tensor],
    own_kv: tuple[torch.Tensor, torch.Tensor],
    plan: Any,
    *,
    sliding_window: int | None = None,
    scale: float | None = None,
    dense: bool = False,
) -> torch.Tensor:
    """Teacher queries [B', H, Lq, D] over student K/V [B', Hkv, L, D] ++ own K/V [B', Hkv, Lq, D] -> [B', H, Lq, D].

    ``dense``: one SDPA call with the whole mask (``plan.mask``), the reference the chunked path must equal.
    Grouped-query heads are matched inside SDPA (``enable_gqa``), without copying K/V per query head.
    """
    student_k, student_v = student_kv
    key, value = own_kv
    gqa = query.shape[1] != key.shape[1]
    if dense:
        keys = torch.cat([student_k, key], dim=2)  # [B', Hkv, L + Lq, D]
        values = torch.cat([student_v, value], dim=2)
        mask = plan.mask(sliding_window)  # [B', 1, Lq, L + Lq]
        return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scale, enable_gqa=gqa)
    n_q, seq_len = query.shape[2], student_k.shape[2]
    rows = max(1, MASK_ELEMENTS // max(1, query.shape[0] * (seq_len + n_q)))  # query entries per chunk
    # Per chunk, the last sequence position any of its valid queries sits at: student keys beyond it are masked.
    last_pos = torch.where(plan.q_valid, plan.q_pos, -1)  # [B', Lq]
    starts = list(range(0, n_q, rows))
    ends = [min(s + rows, n_q) for s in starts]
    padded = F.pad(last_pos, (0, len(starts) * rows - n_q), value=-1)  # [B', chunks * rows]
    k_ends = (padded.view(padded.shape[0], len(starts), rows).amax(dim=(0, 2)) + 1).tolist() if n_q else []
    out = query.new_empty(query.shape)  # [B', H, Lq, D]
    for q0, q1, k_end in zip(starts, ends, k_ends, strict=True):
        keys = torch.cat([student_k[:, :, :k_end], key[:, :, :q1]], dim=2)  # [B', Hkv, k + q1, D]
        values = torch.cat([student_v[:, :, :k_end], value[:, :, :q1]], dim=2)
        mask = mask_block(plan, q0, q1, k_end, q1, sliding_window)  # [B', 1, c, k + q1]
        out[:, :, q0:q1] = F.scaled_dot_product_attention(
            query[:, :, q0:q1], keys, values, attn_mask=mask, scale=scale, enable_gqa=gqa
        )
    return out
