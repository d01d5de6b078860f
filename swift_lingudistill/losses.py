"""The LinguDistill losses' entry points: CE and distillation, chunked, never on a full ``[tokens, vocab]`` tensor.

Each checks its inputs (``loss_inputs``) and runs the one chunk loop of ``loss_chunks``. The student is either its
logits ``[M, V]`` or, on the fused-linear path, a ``StudentHead`` (final hidden states plus output layer) from
which each chunk's logits are made and dropped; the teacher is logits or a ``TeacherHead``, the same way.

- ``fused_loss``: CE on every row + distillation on selected rows (what a training step calls);
- ``cross_entropy_sum``: CE alone (a batch that distils nothing);
- ``distill_sum``: distillation alone, rows in any order (benchmarks and tests).

Peak extra memory is O(chunk_size * vocab) float32 plus the gradient buffers (``[M, V]`` in the logits' dtype,
or ``[M, H]`` and the output layer's ``[V, H]`` on the fused-linear path).
"""

from __future__ import annotations

from typing import Any

import torch

from .config import Divergence
from .divergences import resolve_options
from .loss_chunks import ChunkedLoss
from .loss_inputs import (
    IGNORE_INDEX,
    StudentHead,
    TeacherHead,
    auto_chunk,
    check_labels,
    check_rows,
    check_weights,
    resolve_vocab,
    student_parts,
    teacher_parts,
)

__all__ = ["IGNORE_INDEX", "StudentHead", "TeacherHead", "cross_entropy_sum", "distill_sum", "fused_loss"]


def fused_loss(
    student: torch.Tensor | StudentHead,
    labels: torch.Tensor | None,
    ce_weights: torch.Tensor | None,
    teacher: torch.Tensor | TeacherHead,
    kd_weights: torch.Tensor,
    rows: torch.Tensor,
    *,
    divergence: Divergence = "forward_kl",
    beta: float | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    vocab: int | None = None,
    chunk_size: int | None = None,
    return_argmax: bool = False,
) -> tuple[torch.Tensor, ...]:
    """CE on every row plus distillation on ``rows``: (total, CE per row [M], tau^2 * D per distilled row [N]).

    ``student``: logits [M, Vs] or a ``StudentHead`` (hidden [M, H], weight [Vs, H], bias); ``labels`` [M]
    (-100 = ignored) and ``ce_weights`` [M], or both None for no CE; ``rows`` [N] sorted, unique student rows
    whose teacher is ``teacher`` (logits [N, Vt] or a frozen ``TeacherHead``); ``kd_weights`` [N].
    ``total`` is a 0-dim float32 tensor with the autograd graph (to the student's logits, or its hidden states
    and trainable output layer, and, when it requires grad, the teacher's logits / hidden states); the per-row
    values are detached. ``vocab`` (default the narrower width) is how many leading columns both sides compare.
    ``return_argmax`` appends each row's argmax over the student's vocabulary [M] (-1 without CE).
    """
    options = resolve_options(divergence, beta, temperature, top_k)
    tensors, m, width = student_parts(student)
    n = check_rows(rows, m)
    if n and bool((rows[1:] <= rows[:-1]).any()):
        raise ValueError("rows must be sorted and unique for fused_loss (distill_sum takes any order)")
    if labels is not None or ce_weights is not None:
        check_labels(labels, m, width)
        check_weights(ce_weights, m)
    teacher_side, head, teacher_width = teacher_parts(teacher, rows.shape[0])
    check_weights(kd_weights, rows.shape[0])
    v = resolve_vocab(width, teacher_width, vocab, options.top_k)
    grad_on = torch.is_grad_enabled()
    needs = tuple(grad_on and t is not None and t.requires_grad for t in tensors)
    s0, s1, s2 = (*tensors, None, None)[:3]
    out = ChunkedLoss.apply(
        s0,
        s1,
        s2,
        labels,
        ce_weights,
        teacher_side,
        None if head is None else head.weight,
        None if head is None else head.bias,
        kd_weights,
        rows,
        options,
        v,
        auto_chunk(chunk_size, width),
        needs,
        grad_on and teacher_side.requires_grad,
        return_argmax,
    )
    return out if return_argmax else out[:3]


def cross_entropy_sum(
    student: torch.Tensor | StudentHead,
    labels: torch.Tensor,
    weights: torch.Tensor,
    *,
    chunk_size: int | None = None,
    return_argmax: bool = False,
) -> tuple[torch.Tensor, ...]:
    """sum over non-ignored rows of weights * CE, chunked; replaces the full ``logits.float()`` copy of a plain CE.

    ``student`` logits [M, V] in any float dtype (or a ``StudentHead``), ``labels`` [M] long with -100 = ignored,
    ``weights`` [M] (no gradient). Returns ``total`` (0-dim float32, with graph) and ``per_token`` [M] float32
    detached CE, 0 where ignored (and the argmax per row with ``return_argmax``).
    """
    tensors, _, width = student_parts(student)
    no_teacher = tensors[0].new_zeros(0, width).detach()  # [0, V]: nothing distilled
    no_rows = torch.zeros(0, dtype=torch.long, device=tensors[0].device)
    out = fused_loss(
        student, labels, weights, no_teacher, no_teacher.new_zeros(0), no_rows, chunk_size=chunk_size,
        return_argmax=return_argmax,
    )  # fmt: skip
    return (out[0], out[1], out[3]) if return_argmax else out[:2]


def distill_sum(
    student: torch.Tensor | StudentHead,
    teacher: torch.Tensor | TeacherHead,
    weights: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_n weights[n] * tau^2 * D_n alone, computed chunk by chunk. Returns (total, per_token [N], detached).

    ``student``: logits [M, Vs] or a ``StudentHead``; ``rows`` [N] picks the distilled rows in any order (unique;
    default all M); ``teacher`` gives their teacher (logits [N, Vt] or a ``TeacherHead``) in the same order;
    ``weights`` [N]. ``options``: ``fused_loss``'s keyword arguments (divergence, beta, temperature, top_k, vocab,
    chunk_size).
    """
    tensors, m, _ = student_parts(student, "student_logits")
    device = tensors[0].device
    n = check_rows(rows, m)
    if rows is None:
        rows = torch.arange(m, device=device)
    order = torch.argsort(rows)  # [N]: the chunk loop reads the rows in the student's order
    if n and bool((rows[order][1:] == rows[order][:-1]).any()):
        raise ValueError("rows must be unique (each distilled row once)")
    if bool((order == torch.arange(n, device=order.device)).all()):
        total, _, kd_tokens = fused_loss(student, None, None, teacher, weights, rows, **options)
        return total, kd_tokens
    check_weights(weights, n)
    teacher_side, _, _ = teacher_parts(teacher, n)
    sorted_side = teacher_side.index_select(0, order)  # autograd routes the teacher's gradient back
    teacher = teacher._replace(hidden=sorted_side) if isinstance(teacher, TeacherHead) else sorted_side
    total, _, kd_tokens = fused_loss(
        student, None, None, teacher, weights.index_select(0, order), rows[order], **options
    )
    return total, torch.empty_like(kd_tokens).index_copy_(0, order, kd_tokens)
