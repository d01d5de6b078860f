"""Chunked cross-entropy and distillation losses in one autograd Function, in plain torch.

Why chunked: with a 151936-token vocabulary and up to 8192 tokens, a single float32 ``[tokens, vocab]`` tensor is
about 5 GB, and a naive KL keeps several of them alive until backward. The Function's forward walks the rows
``chunk_size`` at a time, does the float32 math for that chunk (``divergences`` for the distillation term), takes
the chunk's gradient right away and writes it into a buffer in the *input's* dtype. Backward only scales those
buffers by the incoming gradient. Peak extra memory is O(chunk_size * vocab) float32 plus the gradient buffers;
no full-size float32 intermediate ever exists.

Three entry points run the same chunk loop: ``fused_loss`` (CE on every row + distillation on selected rows, what
a training step calls), ``cross_entropy_sum`` (CE alone, for a batch that distils nothing) and ``distill_sum``
(distillation alone, rows in any order: benchmarks and tests).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .config import Divergence
from .divergences import DivergenceOptions, divergence_and_grads, resolve_options
from .loss_inputs import (
    IGNORE_INDEX,
    TeacherHead,
    auto_chunk,
    check_labels,
    check_matrix,
    check_rows,
    check_weights,
    resolve_vocab,
    teacher_parts,
)

__all__ = ["IGNORE_INDEX", "TeacherHead", "cross_entropy_sum", "distill_sum", "fused_loss"]


def _scaled(buffer: torch.Tensor | None, grad_output: torch.Tensor) -> torch.Tensor | None:
    """Chain rule for a scalar loss: the saved gradient times d(outer)/d(total), in place.

    Scaling in place hands autograd the buffer itself instead of a second [M, V] tensor (2.5 GB at 8192 tokens
    of a 151936 vocabulary in bf16); the price is one backward per forward, which ``_once`` enforces.
    """
    return None if buffer is None else buffer.mul_(grad_output.to(buffer.dtype))


def _once(ctx: Any) -> None:
    """The saved gradients are consumed by the first backward (they are scaled in place)."""
    if getattr(ctx, "_lingudistill_used", False):
        raise RuntimeError(
            "backward ran twice through a LinguDistill loss (retain_graph=True): its saved gradients were scaled "
            "in place by the first; compute the loss again for a second backward"
        )
    ctx._lingudistill_used = True


def _head_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, vocab: int) -> torch.Tensor:
    """Float32 logits of one chunk on the first ``vocab`` rows of the head. [c, H] -> [c, vocab]

    The matmul runs in the hidden's dtype when it matches the head's; otherwise the *chunk* is cast to the head's
    dtype (as autocast would do), because casting the [V_t, H] weight would copy it on every chunk.
    """
    return F.linear(hidden.to(weight.dtype), weight[:vocab], None if bias is None else bias[:vocab]).float()


def _chunk_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """CE per row, the weighted sum, and d(sum)/d(logits) in float32. [c, V], [c], [c] -> [c], (), [c, V] | None"""
    x = logits.detach().float()  # [c, V] (a view when logits are float32: never written)
    valid = labels != IGNORE_INDEX  # [c]
    safe = torch.where(valid, labels, 0).unsqueeze(1)  # [c, 1]
    lse = torch.logsumexp(x, dim=-1)  # [c]
    ce = torch.where(valid, lse - x.gather(1, safe).squeeze(1), 0.0)  # [c]
    w = torch.where(valid, weights.detach().float(), 0.0)  # [c]
    total = torch.where(w != 0, w * ce, 0.0).sum()
    g = None
    if need_grad:
        g = torch.exp(x - lse.unsqueeze(1))  # [c, V] softmax
        g.scatter_add_(1, safe, -torch.ones_like(safe, dtype=g.dtype))  # softmax - one_hot
        g.mul_(w.unsqueeze(1)).masked_fill_((w == 0).unsqueeze(1), 0.0)
    return ce, total, g


class _ChunkedLoss(torch.autograd.Function):
    """sum_m ce_w[m] CE_m + sum_n kd_w[n] tau^2 D_n in one pass over row chunks, with one gradient buffer per input.

    The student's logits are read once per chunk and their gradient (CE and distillation together) is written
    once, in their dtype. ``labels`` None skips CE; the distilled ``rows`` are sorted and unique.
    """

    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,  # [M, Vs]
        labels: torch.Tensor | None,  # [M]
        ce_weights: torch.Tensor | None,  # [M]
        teacher_side: torch.Tensor,  # [N, Vt] logits or [N, H] hidden of a TeacherHead
        head_weight: torch.Tensor | None,  # [Vt, H]
        head_bias: torch.Tensor | None,  # [Vt]
        kd_weights: torch.Tensor,  # [N]
        rows: torch.Tensor,  # [N] sorted, unique row indices into logits
        options: DivergenceOptions,
        vocab: int,
        chunk_size: int,
        need_student: bool,
        need_teacher: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, tau, device = logits.shape[0], options.temperature, logits.device
        with_ce = labels is not None
        ce_tokens = torch.zeros(m, dtype=torch.float32, device=device)  # [M]
        kd_tokens = torch.zeros(rows.shape[0], dtype=torch.float32, device=device)  # [N]
        total = torch.zeros((), dtype=torch.float32, device=device)
        grad = None  # [M, Vs] in the logits' dtype; CE writes every row, distillation alone only its rows
        if need_student:
            grad = torch.empty_like(logits) if with_ce else torch.zeros_like(logits)
        grad_teacher = torch.zeros_like(teacher_side) if need_teacher else None  # [N, Vt] or [N, H]
        bounds = torch.searchsorted(rows, torch.arange(0, m + chunk_size, chunk_size, device=device)).tolist()
        for i, start in enumerate(range(0, m, chunk_size)):
            end, j0, j1 = min(start + chunk_size, m), bounds[i], bounds[i + 1]
            g = None  # [c, Vs] float32: this chunk's CE gradient, the distillation one added in
            if with_ce:
                ce, ce_total, g = _chunk_cross_entropy(
                    logits[start:end], labels[start:end], ce_weights[start:end], need_student
                )
                ce_tokens[start:end] = ce
                total += ce_total
            if j1 > j0:  # distilled rows inside this chunk
                t = teacher_side[j0:j1]  # [k, Vt] or [k, H]
                if head_weight is not None:
                    t = _head_logits(t, head_weight, head_bias, vocab)
                d, g_s, g_t = divergence_and_grads(
                    logits[rows[j0:j1]].detach(), t.detach(), options, vocab, need_student, need_teacher
                )
                w = kd_weights[j0:j1].detach().float()  # [k]
                kd_tokens[j0:j1] = d * tau**2
                total += (w * d).sum() * tau**2
                # d(w tau^2 D)/d logits = w tau dD/d(logits / tau); zero-weight rows give exact zeros
                coef = (w * tau)[:, None]  # [k, 1]
                if need_student and g is not None:
                    g[rows[j0:j1] - start, :vocab] += g_s.mul_(coef)
                elif need_student:
                    grad[rows[j0:j1], :vocab] = g_s.mul_(coef).to(grad.dtype)
                if need_teacher:
                    g_t.mul_(coef)  # [k, V]
                    if head_weight is None:
                        grad_teacher[j0:j1, :vocab] = g_t
                    else:  # back through the frozen head: [k, V] @ [V, H] -> [k, H]
                        grad_teacher[j0:j1] = (g_t @ head_weight[:vocab].float()).to(grad_teacher.dtype)
            if g is not None:
                grad[start:end] = g
        ctx.save_for_backward(grad, grad_teacher)
        ctx.mark_non_differentiable(ce_tokens, kd_tokens)
        return total, ce_tokens, kd_tokens

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor, *_: Any) -> tuple[Any, ...]:
        _once(ctx)
        grad, grad_teacher = ctx.saved_tensors
        return (_scaled(grad, grad_total), None, None, _scaled(grad_teacher, grad_total)) + (None,) * 9


def fused_loss(
    logits: torch.Tensor,
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CE on every row plus distillation on ``rows``: (total, CE per row [M], tau^2 * D per distilled row [N]).

    ``logits`` [M, Vs]; ``labels`` [M] (-100 = ignored) and ``ce_weights`` [M], or both None for no CE; ``rows``
    [N] sorted, unique rows of ``logits`` whose teacher is ``teacher`` (logits [N, Vt] or a frozen ``TeacherHead``);
    ``kd_weights`` [N].
    ``total`` is a 0-dim float32 tensor with the autograd graph (to the student's logits and, when it requires
    grad, the teacher's logits / hidden states); the per-row values are detached. ``vocab`` (default the narrower
    width) is how many leading columns both sides compare.
    """
    options = resolve_options(divergence, beta, temperature, top_k)
    check_matrix("logits", logits)
    m = logits.shape[0]
    n = check_rows(rows, m)
    if n and bool((rows[1:] <= rows[:-1]).any()):
        raise ValueError("rows must be sorted and unique for fused_loss (distill_sum takes any order)")
    if labels is not None or ce_weights is not None:
        check_labels(labels, m, logits.shape[1])
        check_weights(ce_weights, m)
    teacher_side, head, teacher_width = teacher_parts(teacher, rows.shape[0])
    check_weights(kd_weights, rows.shape[0])
    v = resolve_vocab(logits.shape[1], teacher_width, vocab, options.top_k)
    grad_on = torch.is_grad_enabled()
    return _ChunkedLoss.apply(
        logits,
        labels,
        ce_weights,
        teacher_side,
        None if head is None else head.weight,
        None if head is None else head.bias,
        kd_weights,
        rows,
        options,
        v,
        auto_chunk(chunk_size, logits.shape[1]),
        grad_on and logits.requires_grad,
        grad_on and teacher_side.requires_grad,
    )


def cross_entropy_sum(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """sum over non-ignored rows of weights * CE, chunked; replaces the full ``logits.float()`` copy of a plain CE.

    ``logits`` [M, V] any float dtype, ``labels`` [M] long with -100 = ignored, ``weights`` [M] (no gradient).
    Returns ``total`` (0-dim float32, with graph) and ``per_token`` [M] float32 detached CE, 0 where ignored.
    """
    check_matrix("logits", logits)
    no_teacher = logits.new_zeros(0, logits.shape[1]).detach()  # [0, V]: nothing distilled
    no_rows = torch.zeros(0, dtype=torch.long, device=logits.device)
    total, ce_tokens, _ = fused_loss(
        logits, labels, weights, no_teacher, no_teacher.new_zeros(0), no_rows, chunk_size=chunk_size
    )
    return total, ce_tokens


def distill_sum(
    student_logits: torch.Tensor,
    teacher: torch.Tensor | TeacherHead,
    weights: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_n weights[n] * tau^2 * D_n alone, computed chunk by chunk. Returns (total, per_token [N], detached).

    ``student_logits`` [M, Vs]; ``rows`` [N] picks the distilled rows in any order (unique; default all M);
    ``teacher`` gives their teacher (logits [N, Vt] or a ``TeacherHead``) in the same order; ``weights`` [N].
    ``options``: ``fused_loss``'s keyword arguments (divergence, beta, temperature, top_k, vocab, chunk_size).
    """
    check_matrix("student_logits", student_logits)
    m = student_logits.shape[0]
    n = check_rows(rows, m)
    if rows is None:
        rows = torch.arange(m, device=student_logits.device)
    order = torch.argsort(rows)  # [N]: the chunk loop reads the rows in the logits' order
    if n and bool((rows[order][1:] == rows[order][:-1]).any()):
        raise ValueError("rows must be unique (each distilled row once)")
    if bool((order == torch.arange(n, device=order.device)).all()):
        total, _, kd_tokens = fused_loss(student_logits, None, None, teacher, weights, rows, **options)
        return total, kd_tokens
    check_weights(weights, n)
    teacher_side, _, _ = teacher_parts(teacher, n)
    sorted_side = teacher_side.index_select(0, order)  # autograd routes the teacher's gradient back
    teacher = teacher._replace(hidden=sorted_side) if isinstance(teacher, TeacherHead) else sorted_side
    total, _, kd_tokens = fused_loss(
        student_logits, None, None, teacher, weights.index_select(0, order), rows[order], **options
    )
    return total, torch.empty_like(kd_tokens).index_copy_(0, order, kd_tokens)
