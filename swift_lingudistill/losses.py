"""Chunked distillation and cross-entropy losses, in plain torch.

Why chunked: with a 151936-token vocabulary and up to 8192 tokens, a single float32 ``[tokens, vocab]`` tensor is
about 5 GB, and a naive KL keeps several of them alive until backward. Each loss here is a
``torch.autograd.Function`` whose forward walks the rows ``chunk_size`` at a time, does the float32 math for that
chunk, takes the chunk's gradient right away, and writes it into a buffer in the *input's* dtype. Backward only
scales those buffers by the incoming gradient. Peak extra memory is O(chunk_size * vocab) float32 plus the
gradient buffers; no full-size float32 intermediate ever exists.

Divergences (tau = temperature, p = softmax(logits / tau) in float32):

- ``forward_kl``: KL(p_T || p_S); optionally against the teacher's top-k renormalised distribution.
- ``reverse_kl``: KL(p_S || p_T).
- ``jsd``: TRL's generalised JSD with mixture M = beta p_T + (1 - beta) p_S,
  D = beta KL(p_T || M) + (1 - beta) KL(p_S || M); beta == 0 is forward KL and beta == 1 reverse KL, as in TRL.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "Divergence",
    "TeacherHead",
    "cross_entropy_sum",
    "distill_sum",
    "fused_loss",
    "token_divergence",
]

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
DIVERGENCES: tuple[str, ...] = ("forward_kl", "reverse_kl", "jsd")
IGNORE_INDEX = -100  # label value that cross_entropy_sum skips, as in transformers / ms-swift
_INDEX_DTYPES = (torch.int64, torch.int32)


class TeacherHead(NamedTuple):
    """Teacher final hidden states plus its output layer: logits are computed chunk by chunk, never in full."""

    hidden: torch.Tensor  # [N, H]
    weight: torch.Tensor  # [V_t, H]  (lm_head weight)
    bias: torch.Tensor | None = None  # [V_t]


class _Options(NamedTuple):
    """Validated divergence options; ``divergence`` is the *effective* one (jsd at beta 0 / 1 is mapped to KL)."""

    divergence: str
    beta: float
    temperature: float
    top_k: int | None


# ---------------------------------------------------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------------------------------------------------


def _resolve_options(divergence: str, beta: float | None, temperature: float, top_k: int | None) -> _Options:
    """Check the divergence options once, up front, so a bad config fails before any compute."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence={divergence!r} is not supported; use one of {', '.join(DIVERGENCES)}")
    if divergence != "jsd" and beta is not None:
        raise ValueError(
            f"beta={beta!r} was given with divergence={divergence!r}, but beta only applies to divergence jsd; "
            "drop beta or set divergence='jsd'"
        )
    if divergence == "jsd":
        beta = 0.5 if beta is None else beta
        if isinstance(beta, bool) or not isinstance(beta, Real) or not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"beta={beta!r} must be a number in [0, 1] (0 = forward KL, 1 = reverse KL)")
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        raise ValueError(f"temperature={temperature!r} must be a positive finite number, e.g. 1.0")
    if not (math.isfinite(float(temperature)) and float(temperature) > 0.0):
        raise ValueError(f"temperature={temperature!r} must be a positive finite number, e.g. 1.0")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, Integral) or int(top_k) < 1:
            raise ValueError(f"top_k={top_k!r} must be an int >= 1, or None to use the full vocabulary")
        if divergence != "forward_kl":
            raise ValueError(
                f"top_k={top_k} only works with divergence='forward_kl', not {divergence!r}: reverse KL and JSD need "
                "the teacher's probability everywhere the student has mass, which a top-k teacher does not provide; "
                "set top_k=None or use divergence='forward_kl'"
            )
        top_k = int(top_k)
    effective = divergence
    beta_value = 0.0 if beta is None else float(beta)
    if divergence == "jsd" and beta_value == 0.0:
        effective = "forward_kl"
    elif divergence == "jsd" and beta_value == 1.0:
        effective = "reverse_kl"
    return _Options(effective, beta_value, float(temperature), top_k)


def _resolve_vocab(student_width: int, teacher_width: int, vocab: int | None, top_k: int | None) -> int:
    """Number of leading columns of both logit matrices that enter the softmax (default: the narrower width)."""
    width = min(student_width, teacher_width)
    if vocab is None:
        vocab = width
    elif isinstance(vocab, bool) or not isinstance(vocab, Integral) or not 1 <= int(vocab) <= width:
        raise ValueError(
            f"vocab={vocab!r} must be an int in [1, {width}] (student has {student_width} columns, teacher "
            f"{teacher_width}); pass the shared vocabulary size or None for the narrower width"
        )
    vocab = int(vocab)
    if top_k is not None and top_k > vocab:
        raise ValueError(f"top_k={top_k} exceeds the vocabulary size {vocab}; use top_k <= {vocab} or None")
    return vocab


def _check_matrix(name: str, tensor: Any) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2 or not tensor.is_floating_point():
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{name} must be a 2-D floating-point tensor [rows, vocab], got {shape}")


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or int(chunk_size) < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be an int >= 1, e.g. 1024")
    return int(chunk_size)


def _check_weights(weights: Any, n: int) -> None:
    if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (n,) or not weights.is_floating_point():
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"weights must be a 1-D float tensor of shape ({n},) (one per distilled row), got {shape}")


def _check_rows(rows: torch.Tensor | None, m: int) -> int:
    """Validate the row selection and return N, the number of distilled rows."""
    if rows is None:
        return m
    if not isinstance(rows, torch.Tensor) or rows.dim() != 1 or rows.dtype not in _INDEX_DTYPES:
        got = f"{rows.dtype} of shape {tuple(rows.shape)}" if isinstance(rows, torch.Tensor) else type(rows).__name__
        raise ValueError(f"rows must be a 1-D int64/int32 tensor of row indices into student_logits, got {got}")
    if rows.numel():
        low, high = torch.stack([rows.min(), rows.max()]).tolist()  # one device sync
        if low < 0 or high >= m:
            raise ValueError(f"rows must index student_logits rows in [0, {m}), got values in [{low}, {high}]")
    return rows.numel()


def _teacher_parts(teacher: torch.Tensor | TeacherHead, n: int) -> tuple[torch.Tensor, TeacherHead | None, int]:
    """Split ``teacher`` into (the tensor that may carry gradient, the head or None, teacher vocabulary width)."""
    if isinstance(teacher, TeacherHead):
        hidden, weight, bias = teacher
        if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2 or tuple(hidden.shape[:1]) != (n,):
            got = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
            raise ValueError(f"TeacherHead.hidden must be [{n}, H] (one row per distilled row), got {got}")
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
            raise ValueError(f"TeacherHead.weight must be [V_t, {hidden.shape[1]}] to match hidden's width")
        if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],)):
            raise ValueError(f"TeacherHead.bias must be None or [{weight.shape[0]}] to match weight")
        if weight.requires_grad or (bias is not None and bias.requires_grad):
            raise ValueError(
                "TeacherHead.weight/bias require grad, but the teacher must be frozen: only gradient w.r.t. "
                "TeacherHead.hidden is supported; call .requires_grad_(False) on the lm_head parameters"
            )
        if not (hidden.is_floating_point() and weight.is_floating_point()):
            raise ValueError(f"TeacherHead needs floating-point hidden and weight, got {hidden.dtype}, {weight.dtype}")
        if bias is not None and bias.dtype != weight.dtype:
            teacher = teacher._replace(bias=bias.to(weight.dtype))  # [V_t]: a cheap copy, unlike the weight
        return hidden, teacher, weight.shape[0]
    _check_matrix("teacher logits", teacher)
    if teacher.shape[0] != n:
        raise ValueError(f"teacher logits have {teacher.shape[0]} rows but {n} rows are distilled; they must match")
    return teacher, None, teacher.shape[1]


# ---------------------------------------------------------------------------------------------------------------------
# the per-token math (float32, plain autograd)
# ---------------------------------------------------------------------------------------------------------------------


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities. [n, V], [n, V] -> [n]"""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _log_mix_ratio(d: torch.Tensor, beta: float) -> torch.Tensor:
    """log(M / p_T) = log(beta + (1 - beta) e^d) for d = log(p_S / p_T), stable for any d and exactly 0 at d == 0.

    The two branches never exponentiate a positive number, so nothing overflows, and ``where`` on clamped inputs
    keeps the unselected branch's gradient finite (no 0 * inf). Exact zero at d == 0 gives JSD(p, p) == 0 exactly.
    """
    positive = d > 0  # [n, V]
    d_neg = torch.where(positive, 0.0, d)  # [n, V]
    d_pos = torch.where(positive, d, 0.0)  # [n, V]
    below = torch.log1p((1.0 - beta) * torch.expm1(d_neg))  # d <= 0
    above = d_pos + torch.log1p(beta * torch.expm1(-d_pos))  # d > 0
    return torch.where(positive, above, below)


def _jsd(log_ps: torch.Tensor, log_pt: torch.Tensor, beta: float) -> torch.Tensor:
    """beta KL(p_T || M) + (1 - beta) KL(p_S || M), written via d = log p_S - log p_T. [n, V] x 2 -> [n]"""
    d = log_ps - log_pt  # [n, V]
    log_m_over_pt = _log_mix_ratio(d, beta)  # [n, V]
    kl_teacher = (log_pt.exp() * -log_m_over_pt).sum(dim=-1)  # [n]
    kl_student = (log_ps.exp() * (d - log_m_over_pt)).sum(dim=-1)  # [n]
    return beta * kl_teacher + (1.0 - beta) * kl_student


def _top_k_forward_kl(log_ps: torch.Tensor, teacher_scaled: torch.Tensor, k: int) -> torch.Tensor:
    """KL from the teacher renormalised over its k largest logits to the full-vocabulary student. -> [n]"""
    top_logits, top_ids = teacher_scaled.topk(k, dim=-1)  # [n, k]
    log_pt_k = F.log_softmax(top_logits, dim=-1)  # [n, k]
    return _kl(log_pt_k, log_ps.gather(-1, top_ids))


def _divergence(student: torch.Tensor, teacher: torch.Tensor, opts: _Options, vocab: int) -> torch.Tensor:
    """Per-row divergence on the first ``vocab`` columns, in float32. [n, Vs], [n, Vt] -> [n]"""
    s = student[:, :vocab].float() / opts.temperature  # [n, V]
    t = teacher[:, :vocab].float() / opts.temperature  # [n, V]
    log_ps = F.log_softmax(s, dim=-1)  # [n, V]
    if opts.top_k is not None:
        return _top_k_forward_kl(log_ps, t, opts.top_k)
    log_pt = F.log_softmax(t, dim=-1)  # [n, V]
    if opts.divergence == "forward_kl":
        return _kl(log_pt, log_ps)
    if opts.divergence == "reverse_kl":
        return _kl(log_ps, log_pt)
    return _jsd(log_ps, log_pt, opts.beta)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    divergence: Divergence = "forward_kl",
    beta: float | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    vocab: int | None = None,
) -> torch.Tensor:
    """Per-token D, float32, differentiable w.r.t. both inputs. [n, Vs], [n, Vt] -> [n]. No tau^2 factor.

    This is the reference math that ``distill_sum`` runs on each chunk; call it directly only on small inputs, since
    it holds several float32 [n, V] intermediates for backward. ``beta`` defaults to 0.5 for ``jsd``.
    """
    opts = _resolve_options(divergence, beta, temperature, top_k)
    _check_matrix("student_logits", student_logits)
    _check_matrix("teacher_logits", teacher_logits)
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(
            f"student_logits has {student_logits.shape[0]} rows and teacher_logits {teacher_logits.shape[0]}; "
            "pass the same tokens on both sides"
        )
    v = _resolve_vocab(student_logits.shape[1], teacher_logits.shape[1], vocab, opts.top_k)
    return _divergence(student_logits, teacher_logits, opts, v)


# ---------------------------------------------------------------------------------------------------------------------
# chunked distillation
# ---------------------------------------------------------------------------------------------------------------------


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


def _head_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Float32 logits of one chunk. [c, H] -> [c, V_t]

    The matmul runs in the hidden's dtype when it matches the head's; otherwise the *chunk* is cast to the head's
    dtype (as autocast would do), because casting the [V_t, H] weight would copy it on every chunk.
    """
    return F.linear(hidden.to(weight.dtype), weight, bias).float()


def _chunk_divergence(
    s: torch.Tensor, t: torch.Tensor, opts: _Options, vocab: int, need_s: bool, need_t: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """D per row and its analytic gradients w.r.t. the tau-scaled logits a = s/tau, b = t/tau.

    [c, Vs], [c, Vt] -> D [c], dD/da [c, V] or None, dD/db [c, V] or None (float32, first ``vocab`` columns).
    Closed forms instead of autograd: no graph, and only a few float32 [c, V] tensors alive at once.
    """
    a = s[:, :vocab].float() / opts.temperature  # [c, V]
    b = t[:, :vocab].float() / opts.temperature  # [c, V]
    ls = F.log_softmax(a, dim=-1)  # [c, V]
    del a
    g_s = g_t = None
    if opts.top_k is not None:
        top_logits, top_ids = b.topk(opts.top_k, dim=-1)  # [c, k]
        del b
        ltk = F.log_softmax(top_logits, dim=-1)  # [c, k]
        ptk = ltk.exp()  # [c, k]
        lsk = ls.gather(-1, top_ids)  # [c, k]
        d = (ptk * (ltk - lsk)).sum(-1)  # [c]
        if need_s:  # pS - pT_k (pT_k renormalised on the top k, 0 elsewhere)
            g_s = ls.exp_().scatter_add_(-1, top_ids, -ptk)
        if need_t:  # only the k selected logits move D
            g_t = torch.zeros_like(ls).scatter_(-1, top_ids, ptk * (ltk - lsk - d[:, None]))
        return d, g_s, g_t
    lt = F.log_softmax(b, dim=-1)  # [c, V]
    del b
    if opts.divergence == "forward_kl":  # D = sum pT (lt - ls)
        pt = lt.exp()  # [c, V]
        diff = lt - ls  # [c, V]
        d = (pt * diff).sum(-1)
        if need_s:
            g_s = ls.exp_().sub_(pt)  # pS - pT
        if need_t:
            g_t = diff.sub_(d[:, None]).mul_(pt)  # pT (lt - ls - D)
        return d, g_s, g_t
    if opts.divergence == "reverse_kl":  # D = sum pS (ls - lt)
        ps = ls.exp()  # [c, V]
        diff = ls - lt  # [c, V]
        d = (ps * diff).sum(-1)
        if need_t:
            g_t = lt.exp_().sub_(ps)  # pT - pS
        if need_s:
            g_s = diff.sub_(d[:, None]).mul_(ps)  # pS (ls - lt - D)
        return d, g_s, g_t
    # jsd: M = beta pT + (1 - beta) pS; D = beta KL(pT||M) + (1 - beta) KL(pS||M), via r = log(M / pT)
    beta = opts.beta
    diff = ls - lt  # [c, V]: log(pS / pT)
    r = _log_mix_ratio(diff, beta)  # [c, V]
    ps, pt = ls.exp_(), lt.exp_()  # [c, V] each (in place: ls / lt are not needed any more)
    k_t = (pt * -r).sum(-1)  # [c]: KL(pT || M)
    diff.sub_(r)  # log(pS / M)
    k_s = (ps * diff).sum(-1)  # [c]: KL(pS || M)
    d = beta * k_t + (1.0 - beta) * k_s
    if need_s:
        g_s = (diff - k_s[:, None]).mul_(ps).mul_(1.0 - beta)  # (1-beta) pS (log pS/M - KL(pS||M))
    if need_t:
        g_t = r.neg_().sub_(k_t[:, None]).mul_(pt).mul_(beta)  # beta pT (log pT/M - KL(pT||M))
    return d, g_s, g_t


class _DistillSum(torch.autograd.Function):
    """Forward computes the loss *and* its input gradients chunk by chunk; backward only rescales them."""

    @staticmethod
    def forward(
        ctx: Any,
        student: torch.Tensor,  # [M, Vs]
        teacher_side: torch.Tensor,  # [N, Vt] logits, or [N, H] hidden of a TeacherHead
        head_weight: torch.Tensor | None,  # [Vt, H]
        head_bias: torch.Tensor | None,  # [Vt]
        weights: torch.Tensor,  # [N]
        rows: torch.Tensor | None,  # [N]
        opts: _Options,
        vocab: int,
        chunk_size: int,
        need_student: bool,
        need_teacher: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = weights.shape[0]
        tau = opts.temperature
        per_token = torch.empty(n, dtype=torch.float32, device=student.device)  # [N]
        total = torch.zeros((), dtype=torch.float32, device=student.device)
        grad_student = torch.zeros_like(student) if need_student else None  # [M, Vs], input dtype
        grad_teacher = torch.zeros_like(teacher_side) if need_teacher else None  # [N, Vt] or [N, H]
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            ids = None if rows is None else rows[start:end]  # [c]
            s = student[start:end] if ids is None else student.index_select(0, ids)  # [c, Vs]
            t_in = teacher_side[start:end]  # [c, Vt] or [c, H]
            t = t_in if head_weight is None else _head_logits(t_in, head_weight[:vocab], _bias(head_bias, vocab))
            d, g_s, g_t = _chunk_divergence(s.detach(), t.detach(), opts, vocab, need_student, need_teacher)
            w = weights[start:end].detach().float()  # [c]
            per_token[start:end] = d * tau**2
            total += (w * d).sum() * tau**2
            # d(w tau^2 D)/d logits = w tau dD/d(logits / tau); zero-weight rows give exact zeros
            coef = (w * tau)[:, None]  # [c, 1]
            if need_student:
                g_s = g_s.mul_(coef).to(grad_student.dtype)  # [c, V]
                if ids is None:
                    grad_student[start:end, :vocab] = g_s
                else:
                    grad_student[:, :vocab].index_add_(0, ids, g_s)
            if need_teacher:
                g_t.mul_(coef)  # [c, V]
                if head_weight is None:
                    grad_teacher[start:end, :vocab] = g_t
                else:  # back through the frozen head: [c, V] @ [V, H] -> [c, H]
                    grad_teacher[start:end] = (g_t @ head_weight[:vocab].float()).to(grad_teacher.dtype)
        ctx.save_for_backward(grad_student, grad_teacher)
        ctx.mark_non_differentiable(per_token)
        return total, per_token

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor, _grad_per_token: torch.Tensor | None) -> tuple[Any, ...]:
        _once(ctx)
        grad_student, grad_teacher = ctx.saved_tensors
        return (_scaled(grad_student, grad_total), _scaled(grad_teacher, grad_total)) + (None,) * 9


def _bias(bias: torch.Tensor | None, vocab: int) -> torch.Tensor | None:
    return None if bias is None else bias[:vocab]


def _auto_chunk(chunk_size: int | None, vocab: int) -> int:
    """Rows per chunk: about 8M float32 elements (32 MB) per [c, V] intermediate unless told otherwise."""
    return _check_chunk_size(chunk_size) if chunk_size is not None else max(1, _CHUNK_ELEMENTS // max(vocab, 1))


_CHUNK_ELEMENTS = 1 << 23  # 8M float32 elements: 32 MB per intermediate, ~55 rows at V = 151936


def distill_sum(
    student_logits: torch.Tensor,
    teacher: torch.Tensor | TeacherHead,
    weights: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    divergence: Divergence = "forward_kl",
    beta: float | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    vocab: int | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_n weights[n] * tau^2 * D_n, computed chunk by chunk. Returns (total, per_token).

    ``student_logits`` [M, Vs]; ``rows`` [N] picks the distilled rows (gathered per chunk, never copied whole);
    ``teacher`` is logits [N, Vt] or a frozen ``TeacherHead`` whose logits are built per chunk; ``weights`` [N]
    gets no gradient. ``total`` is a 0-dim float32 tensor with the autograd graph (gradient flows to the student
    and, when it requires grad, to the teacher logits / hidden); ``per_token`` [N] is detached tau^2 * D_n.
    """
    opts = _resolve_options(divergence, beta, temperature, top_k)
    _check_matrix("student_logits", student_logits)
    n = _check_rows(rows, student_logits.shape[0])
    teacher_side, head, teacher_width = _teacher_parts(teacher, n)
    _check_weights(weights, n)
    v = _resolve_vocab(student_logits.shape[1], teacher_width, vocab, opts.top_k)
    chunk_size = _auto_chunk(chunk_size, v)
    grad_on = torch.is_grad_enabled()
    return _DistillSum.apply(
        student_logits,
        teacher_side,
        None if head is None else head.weight,
        None if head is None else head.bias,
        weights,
        rows,
        opts,
        v,
        chunk_size,
        grad_on and student_logits.requires_grad,
        grad_on and teacher_side.requires_grad,
    )


# ---------------------------------------------------------------------------------------------------------------------
# chunked cross-entropy
# ---------------------------------------------------------------------------------------------------------------------


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


class _CrossEntropySum(torch.autograd.Function):
    """Weighted CE whose forward also writes d(total)/d(logits) into a buffer of the logits' dtype."""

    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,  # [M, V]
        labels: torch.Tensor,  # [M]
        weights: torch.Tensor,  # [M]
        chunk_size: int,
        need_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = logits.shape[0]
        per_token = torch.zeros(m, dtype=torch.float32, device=logits.device)  # [M]
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        grad = torch.empty_like(logits) if need_grad else None  # [M, V], logits dtype
        for start in range(0, m, chunk_size):
            end = min(start + chunk_size, m)
            ce, chunk_total, g = _chunk_cross_entropy(
                logits[start:end], labels[start:end], weights[start:end], need_grad
            )
            total += chunk_total
            per_token[start:end] = ce
            if need_grad:
                grad[start:end] = g
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(per_token)
        return total, per_token

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor, _grad_per_token: torch.Tensor | None) -> tuple[Any, ...]:
        _once(ctx)
        (grad,) = ctx.saved_tensors
        return _scaled(grad, grad_total), None, None, None, None


class _FusedLoss(torch.autograd.Function):
    """CE on every row plus distillation on the selected rows, in one pass with one gradient buffer.

    The student's logits are read once per chunk and their gradient (CE and distillation together) is written
    once, in their dtype: no second [M, V] buffer, no autograd sum of two.
    """

    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,  # [M, Vs]
        labels: torch.Tensor,  # [M]
        ce_weights: torch.Tensor,  # [M]
        teacher_side: torch.Tensor,  # [N, Vt] logits or [N, H] hidden
        head_weight: torch.Tensor | None,  # [Vt, H]
        head_bias: torch.Tensor | None,  # [Vt]
        kd_weights: torch.Tensor,  # [N]
        rows: torch.Tensor,  # [N] sorted row indices into logits
        opts: _Options,
        vocab: int,
        chunk_size: int,
        need_student: bool,
        need_teacher: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, tau = logits.shape[0], opts.temperature
        device = logits.device
        ce_tokens = torch.zeros(m, dtype=torch.float32, device=device)  # [M]
        kd_tokens = torch.zeros(rows.shape[0], dtype=torch.float32, device=device)  # [N]
        total = torch.zeros((), dtype=torch.float32, device=device)
        grad = torch.empty_like(logits) if need_student else None  # [M, Vs]
        grad_teacher = torch.zeros_like(teacher_side) if need_teacher else None  # [N, Vt] or [N, H]
        bounds = torch.searchsorted(rows, torch.arange(0, m + chunk_size, chunk_size, device=device)).tolist()
        for i, start in enumerate(range(0, m, chunk_size)):
            end = min(start + chunk_size, m)
            ce, ce_total, g = _chunk_cross_entropy(
                logits[start:end], labels[start:end], ce_weights[start:end], need_student
            )
            ce_tokens[start:end] = ce
            total += ce_total
            j0, j1 = bounds[i], bounds[i + 1]
            if j1 > j0:  # distilled rows inside this chunk
                local = rows[j0:j1] - start  # [k]
                t_in = teacher_side[j0:j1]
                t = t_in if head_weight is None else _head_logits(t_in, head_weight[:vocab], _bias(head_bias, vocab))
                d, g_s, g_t = _chunk_divergence(
                    logits[rows[j0:j1]].detach(), t.detach(), opts, vocab, need_student, need_teacher
                )
                w = kd_weights[j0:j1].detach().float()  # [k]
                kd_tokens[j0:j1] = d * tau**2
                total += (w * d).sum() * tau**2
                coef = (w * tau)[:, None]  # [k, 1]
                if need_student:
                    g[local, :vocab] += g_s.mul_(coef)
                if need_teacher:
                    g_t.mul_(coef)
                    if head_weight is None:
                        grad_teacher[j0:j1, :vocab] = g_t
                    else:
                        grad_teacher[j0:j1] = (g_t @ head_weight[:vocab].float()).to(grad_teacher.dtype)
            if need_student:
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
    labels: torch.Tensor,
    ce_weights: torch.Tensor,
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
    """``cross_entropy_sum`` + ``distill_sum`` in one pass: (total, CE per row [M], tau^2 * D per row [N]).

    ``rows`` [N] (sorted, unique) are the distilled rows of ``logits`` [M, Vs]; ``teacher`` gives their teacher
    logits (a tensor [N, Vt] or a ``TeacherHead``). Gradients equal the two separate functions'.
    """
    opts = _resolve_options(divergence, beta, temperature, top_k)
    _check_matrix("logits", logits)
    m = logits.shape[0]
    n = _check_rows(rows, m)
    if n and bool((rows[1:] <= rows[:-1]).any()):
        raise ValueError("rows must be sorted and unique for fused_loss (use distill_sum for any order)")
    teacher_side, head, teacher_width = _teacher_parts(teacher, n)
    _check_weights(kd_weights, n)
    _check_weights(ce_weights, m)
    v = _resolve_vocab(logits.shape[1], teacher_width, vocab, opts.top_k)
    grad_on = torch.is_grad_enabled()
    return _FusedLoss.apply(
        logits,
        labels,
        ce_weights,
        teacher_side,
        None if head is None else head.weight,
        None if head is None else head.bias,
        kd_weights,
        rows,
        opts,
        v,
        _auto_chunk(chunk_size, logits.shape[1]),
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
    _check_matrix("logits", logits)
    m, v = logits.shape
    chunk_size = _auto_chunk(chunk_size, v)
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (m,) or labels.dtype not in _INDEX_DTYPES:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D int64/int32 tensor of shape ({m},), got {got}")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= v))  # [M]
    if bool(bad.any()):
        raise ValueError(
            f"labels must be in [0, {v}) or {IGNORE_INDEX} (ignored); found {labels[bad][:5].tolist()}; "
            "check that the labels match the logits' vocabulary"
        )
    _check_weights(weights, m)
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    return _CrossEntropySum.apply(logits, labels, weights, chunk_size, need_grad)
