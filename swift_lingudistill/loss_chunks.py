"""The chunk loop behind every LinguDistill loss: one autograd Function, two ways to hold the student.

Why chunked: with a 151936-token vocabulary and up to 16384 tokens, a single float32 ``[tokens, vocab]`` tensor is
about 10 GB, and a naive loss keeps several alive until backward. The Function's forward walks the rows
``chunk_size`` at a time, does the float32 math for that chunk (CE here, the divergence in ``divergences``), takes
the chunk's gradient right away and stores it; backward only scales the stored gradients by the incoming one.

The student enters in one of two forms (a "side"):
- ``LogitsSide``: its ``[M, V]`` logits exist (what the model's forward returned). A chunk is a slice; the
  gradient is one ``[M, V]`` buffer in the logits' dtype.
- ``HeadSide``: only its final hidden states ``[M, H]`` and output layer exist (the fused-linear path). A chunk's
  logits are made from the hidden states, used and dropped; the gradient goes straight on to the hidden states
  ``[M, H]`` and, when the output layer trains, to its weight ``[V, H]`` and bias. No ``[M, V]`` tensor exists in
  any dtype. The arithmetic is the one autograd would do after ``F.linear`` (the chunk's logits rounded to the
  weight's dtype, their gradient too before the matmul to the hidden states), except that the weight's gradient
  is summed over chunks in float32 from the unrounded float32 gradient: as accurate, one copy fewer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .divergences import DivergenceOptions, divergence_and_grads
from .loss_inputs import IGNORE_INDEX

__all__ = ["ChunkedLoss", "HeadSide", "LogitsSide", "head_logits"]


def head_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, vocab: int) -> torch.Tensor:
    """Float32 logits of one chunk on the first ``vocab`` rows of an output layer. [c, H] -> [c, vocab]

    The matmul runs in the weight's dtype (the chunk is cast when the hidden's differs, as autocast would do:
    casting the [V, H] weight would copy it on every chunk); the result is rounded to that dtype, as the
    model's own output layer would return it, and only then widened to float32.
    """
    return F.linear(hidden.to(weight.dtype), weight[:vocab], None if bias is None else bias[:vocab]).float()


class LogitsSide:
    """The student as ``[M, V]`` logits: chunks are slices, the gradient one buffer in the logits' dtype."""

    def __init__(self, logits: torch.Tensor, need_grad: bool, dense_grad: bool) -> None:
        self.logits = logits  # [M, V]
        self.width = logits.shape[1]
        self.grad = None  # [M, V]; CE writes every row (dense), distillation alone only its rows (zeros elsewhere)
        if need_grad:
            self.grad = torch.empty_like(logits) if dense_grad else torch.zeros_like(logits)

    @property
    def need_grad(self) -> bool:
        return self.grad is not None

    def rows(self, start: int, end: int) -> torch.Tensor:
        return self.logits[start:end].detach()  # [c, V] in the logits' dtype

    def pick(self, index: torch.Tensor) -> torch.Tensor:
        return self.logits[index].detach()  # [k, V]

    def put(self, start: int, end: int, g: torch.Tensor) -> None:
        self.grad[start:end] = g  # [c, V] float32 -> the logits' dtype

    def put_rows(self, index: torch.Tensor, g: torch.Tensor) -> None:
        self.grad[index, : g.shape[1]] = g.to(self.grad.dtype)  # [k, vocab]

    def gradients(self) -> tuple[torch.Tensor | None, ...]:
        return (self.grad, None, None)


class HeadSide:
    """The student as final hidden states plus output layer: each chunk's logits exist only inside the loop."""

    def __init__(
        self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, needs: tuple[bool, bool, bool]
    ) -> None:
        self.hidden, self.weight, self.bias = hidden, weight, bias  # [M, H], [V, H], [V] | None
        self.width = weight.shape[0]
        need_hidden, self.need_weight, need_bias = needs
        self.need_bias = need_bias and bias is not None
        # zeros: rows the loop never visits (distillation alone) keep an exact zero gradient
        self.grad_hidden = torch.zeros_like(hidden) if need_hidden else None  # [M, H]
        # Summed over chunks in float32: a bf16 running sum would round once per chunk (hundreds of times). Made
        # by the first chunk's product (no zero-filled [V, H] pass first: on a CPU that pass alone costs more
        # than a small batch's matmul).
        self.grad_weight: torch.Tensor | None = None  # [V, H] float32
        self.grad_bias: torch.Tensor | None = None  # [V] float32

    @property
    def need_grad(self) -> bool:
        return self.grad_hidden is not None or self.need_weight or self.need_bias

    def rows(self, start: int, end: int) -> torch.Tensor:
        return head_logits(self.hidden[start:end].detach(), self.weight.detach(), self._bias(), self.width)

    def pick(self, index: torch.Tensor) -> torch.Tensor:
        return head_logits(self.hidden[index].detach(), self.weight.detach(), self._bias(), self.width)

    def put(self, start: int, end: int, g: torch.Tensor) -> None:
        self._back(slice(start, end), g)

    def put_rows(self, index: torch.Tensor, g: torch.Tensor) -> None:
        self._back(index, g)

    def _bias(self) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.detach()

    def _back(self, index: slice | torch.Tensor, g: torch.Tensor) -> None:
        """Chain rule through ``logits = hidden @ weight[:w].T + bias[:w]`` for the rows ``index``; g [c, w] float32."""
        w = g.shape[1]
        weight = self.weight.detach()[:w]  # [w, H]
        if self.grad_hidden is not None:  # [c, w] @ [w, H] -> [c, H], in the weight's dtype as autograd would
            self.grad_hidden[index] = (g.to(weight.dtype) @ weight).to(self.grad_hidden.dtype)
        # The weight's and bias' sums take the float32 gradient as it is (autograd would round it to the weight's
        # dtype first): one [c, w] copy less, and no less accurate.
        if self.need_weight:  # += [w, c] @ [c, H]
            hidden = self.hidden.detach()[index].float()  # [c, H]
            if self.grad_weight is None and w == self.width:
                self.grad_weight = g.t() @ hidden
            else:
                if self.grad_weight is None:
                    self.grad_weight = torch.zeros(self.weight.shape, dtype=torch.float32, device=g.device)
                self.grad_weight[:w].addmm_(g.t(), hidden)
        if self.need_bias:
            if self.grad_bias is None:
                self.grad_bias = torch.zeros(self.bias.shape, dtype=torch.float32, device=g.device)
            self.grad_bias[:w] += g.sum(0)

    def gradients(self) -> tuple[torch.Tensor | None, ...]:
        """The three buffers in their parameters' dtypes (the float32 sums are cast once, at the end); a needed
        gradient no chunk touched (no rows) is zeros."""
        weight = bias = None
        if self.need_weight:
            weight = (
                torch.zeros_like(self.weight) if self.grad_weight is None else self.grad_weight.to(self.weight.dtype)
            )
        if self.need_bias:
            bias = torch.zeros_like(self.bias) if self.grad_bias is None else self.grad_bias.to(self.bias.dtype)
        return (self.grad_hidden, weight, bias)


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


def _ce_and_forward_kl(
    student: torch.Tensor,
    labels: torch.Tensor,
    ce_weights: torch.Tensor,
    local: torch.Tensor,
    teacher: torch.Tensor,
    kd_weights: torch.Tensor,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """CE on every row and KL(pT || pS) on the rows ``local``, at temperature 1 over the whole vocabulary: the
    default loss, with one student log-softmax for both terms and their gradients summed in one buffer.

    [c, V] student, [c] labels and CE weights, [k] local rows (sorted), [k, V] teacher, [k] weights ->
    CE [c], the weighted CE sum, D [k], and the gradient of (sum w_ce CE + sum w_kd D) w.r.t. the student
    [c, V] float32 (or None): pS * (w_ce + w_kd) - w_ce * onehot - w_kd * pT. About half the passes over
    [c, V] of the general path (``_chunk_cross_entropy`` then ``divergence_and_grads``).
    """
    ls = F.log_softmax(student.float(), dim=-1)  # [c, V]
    valid = labels != IGNORE_INDEX  # [c]
    safe = torch.where(valid, labels, 0).unsqueeze(1)  # [c, 1]
    ce = torch.where(valid, -ls.gather(1, safe).squeeze(1), 0.0)  # [c]
    w = torch.where(valid, ce_weights.detach().float(), 0.0)  # [c]
    ce_total = torch.where(w != 0, w * ce, 0.0).sum()
    first, k = int(local[0]), local.shape[0]
    contiguous = int(local[-1]) - first + 1 == k
    ls_k = ls[first : first + k] if contiguous else ls.index_select(0, local)  # [k, V] (a view when contiguous)
    lt = F.log_softmax(teacher.float(), dim=-1)  # [k, V]
    pt = lt.exp()  # [k, V]
    d = lt.sub_(ls_k).mul_(pt).sum(-1)  # [k]: sum pT (log pT - log pS)
    del lt, ls_k
    if not need_grad:
        return ce, ce_total, d, None
    kd = kd_weights.detach().float()  # [k]
    row_weight = w.index_add(0, local, kd)  # [c]: w_ce + w_kd
    g = ls.exp_().mul_(row_weight[:, None])  # [c, V] pS (w_ce + w_kd), in the log-softmax's buffer
    g.scatter_add_(1, safe, -w[:, None])  # - w_ce onehot (0 on ignored rows)
    pt.mul_(kd[:, None])  # w_kd pT
    if contiguous:
        g[first : first + k].sub_(pt)
    else:
        g.index_add_(0, local, pt, alpha=-1.0)
    return ce, ce_total, d, g


def _scaled(buffer: torch.Tensor | None, grad_output: torch.Tensor) -> torch.Tensor | None:
    """Chain rule for a scalar loss: the saved gradient times d(outer)/d(total), in place.

    Scaling in place hands autograd the buffer itself instead of a second full-size copy (2.5 GB at 8192 tokens
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


class ChunkedLoss(torch.autograd.Function):
    """sum_m ce_w[m] CE_m + sum_n kd_w[n] tau^2 D_n in one pass over row chunks, gradients stored as it goes.

    The student is ``s0`` (logits [M, V]) or ``s0, s1, s2`` (hidden [M, H], weight [V, H], bias [V] | None) per
    ``needs``' length; ``labels`` None skips CE; the distilled ``rows`` are sorted and unique. Outputs: the total,
    CE per row [M], tau^2 D per distilled row [N], and each row's argmax over the student's vocabulary [M] (-1
    where CE is off or ``want_argmax`` is false): swift's token accuracy, which otherwise reads the full logits.
    """

    @staticmethod
    def forward(
        ctx: Any,
        s0: torch.Tensor,  # [M, Vs] logits or [M, H] hidden
        s1: torch.Tensor | None,  # [Vs, H] output weight (head side)
        s2: torch.Tensor | None,  # [Vs] output bias (head side)
        labels: torch.Tensor | None,  # [M]
        ce_weights: torch.Tensor | None,  # [M]
        teacher_side: torch.Tensor,  # [N, Vt] logits or [N, H] hidden of a TeacherHead
        head_weight: torch.Tensor | None,  # [Vt, H] teacher
        head_bias: torch.Tensor | None,  # [Vt]
        kd_weights: torch.Tensor,  # [N]
        rows: torch.Tensor,  # [N] sorted, unique row indices into the student's rows
        options: DivergenceOptions,
        vocab: int,
        chunk_size: int,
        needs: tuple[bool, ...],  # (logits,) or (hidden, weight, bias): which student inputs get a gradient
        need_teacher: bool,
        want_argmax: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m, tau, device = s0.shape[0], options.temperature, s0.device
        with_ce = labels is not None
        side = LogitsSide(s0, needs[0], with_ce) if len(needs) == 1 else HeadSide(s0, s1, s2, needs)
        ce_tokens = torch.zeros(m, dtype=torch.float32, device=device)  # [M]
        kd_tokens = torch.zeros(rows.shape[0], dtype=torch.float32, device=device)  # [N]
        argmax = torch.full((m,), -1, dtype=torch.long, device=device)  # [M]
        total = torch.zeros((), dtype=torch.float32, device=device)
        grad_teacher = torch.zeros_like(teacher_side) if need_teacher else None  # [N, Vt] or [N, H]
        # The default loss (CE + forward KL at tau 1 on the whole vocabulary, no top-k) shares one log-softmax.
        shared_softmax = (
            with_ce
            and (options.divergence, options.top_k, tau) == ("forward_kl", None, 1.0)
            and vocab == side.width
            and not need_teacher
        )
        bounds = torch.searchsorted(rows, torch.arange(0, m + chunk_size, chunk_size, device=device)).tolist()
        for i, start in enumerate(range(0, m, chunk_size)):
            end, j0, j1 = min(start + chunk_size, m), bounds[i], bounds[i + 1]
            g = None  # [c, Vs] float32: this chunk's CE gradient, the distillation one added in
            student = None  # [c, Vs]: this chunk's logits (made once on the head side)
            t = None  # [k, Vt]: the distilled rows' teacher logits
            if j1 > j0:  # distilled rows inside this chunk
                t = teacher_side[j0:j1]  # [k, Vt] or [k, H]
                if head_weight is not None:
                    t = head_logits(t, head_weight, head_bias, vocab)
            if with_ce:
                student = side.rows(start, end)
                if want_argmax:
                    argmax[start:end] = student.argmax(dim=-1)
                if shared_softmax and t is not None:
                    w = kd_weights[j0:j1].detach().float()  # [k]
                    ce, ce_total, d, g = _ce_and_forward_kl(
                        student, labels[start:end], ce_weights[start:end], rows[j0:j1] - start, t[:, :vocab], w,
                        side.need_grad,
                    )  # fmt: skip
                    kd_tokens[j0:j1] = d
                    total += (w * d).sum()
                    t = None  # done: both terms and their gradient
                else:
                    ce, ce_total, g = _chunk_cross_entropy(
                        student, labels[start:end], ce_weights[start:end], side.need_grad
                    )
                ce_tokens[start:end] = ce
                total += ce_total
            if t is not None:
                picked = side.pick(rows[j0:j1]) if student is None else student[rows[j0:j1] - start]  # [k, Vs]
                d, g_s, g_t = divergence_and_grads(picked, t.detach(), options, vocab, side.need_grad, need_teacher)
                w = kd_weights[j0:j1].detach().float()  # [k]
                kd_tokens[j0:j1] = d * tau**2
                total += (w * d).sum() * tau**2
                # d(w tau^2 D)/d logits = w tau dD/d(logits / tau); zero-weight rows give exact zeros
                coef = (w * tau)[:, None]  # [k, 1]
                if side.need_grad and g is not None:
                    g[rows[j0:j1] - start, :vocab] += g_s.mul_(coef)
                elif side.need_grad:
                    side.put_rows(rows[j0:j1], g_s.mul_(coef))
                if need_teacher:
                    g_t.mul_(coef)  # [k, V]
                    if head_weight is None:
                        grad_teacher[j0:j1, :vocab] = g_t
                    else:  # back through the frozen head: [k, V] @ [V, H] -> [k, H]
                        grad_teacher[j0:j1] = (g_t @ head_weight[:vocab].float()).to(grad_teacher.dtype)
            if g is not None:
                side.put(start, end, g)
            del student, g
        ctx.save_for_backward(*side.gradients(), grad_teacher)
        ctx.mark_non_differentiable(ce_tokens, kd_tokens, argmax)
        return total, ce_tokens, kd_tokens, argmax

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor, *_: Any) -> tuple[Any, ...]:
        _once(ctx)
        g0, g1, g2, grad_teacher = ctx.saved_tensors
        scaled = tuple(_scaled(g, grad_total) for g in (g0, g1, g2))
        return scaled + (None, None, _scaled(grad_teacher, grad_total)) + (None,) * 10
