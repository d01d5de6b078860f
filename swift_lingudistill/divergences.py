"""Per-token divergences between the teacher's and the student's next-token distributions, in plain torch.

With a = student logits / tau and b = teacher logits / tau, pS = softmax(a), pT = softmax(b):

- ``forward_kl``: KL(pT || pS); with ``top_k``, against the teacher renormalised over its k largest logits;
- ``reverse_kl``: KL(pS || pT);
- ``jsd``: the generalized JSD with mixture M = beta pT + (1 - beta) pS,
  D = beta KL(pT || M) + (1 - beta) KL(pS || M); beta 0 is forward KL and beta 1 reverse KL (as in TRL).

``divergence`` is the definition: D per row, differentiable by autograd in any dtype (the tests differentiate
it in float64 as their gradient reference). ``divergence_and_grads`` is what the chunked loss runs: the same
formulas for one chunk in float32, with their gradients in closed form and few [rows, vocab] tensors alive.
The options are validated by the config schema's own ``LossConfig``: one set of rules for YAML and for code.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from pydantic import ValidationError

from .config import ConfigError, LossConfig, format_validation_error

__all__ = ["DivergenceOptions", "divergence", "divergence_and_grads", "log_mix_ratio", "resolve_options"]


class DivergenceOptions(NamedTuple):
    """Validated options; ``divergence`` is the *effective* one (jsd at beta 0 / 1 is the KL it equals)."""

    divergence: str
    beta: float
    temperature: float
    top_k: int | None


@lru_cache(maxsize=64)
def resolve_options(
    divergence: str = "forward_kl", beta: float | None = None, temperature: float = 1.0, top_k: int | None = None
) -> DivergenceOptions:
    """Check the options with the schema's rules (names, bounds, the jsd beta default, top-k with forward KL)."""
    try:
        loss = LossConfig(divergence=divergence, beta=beta, temperature=temperature, top_k=top_k)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "loss options", root=LossConfig)) from None
    effective, beta_value = loss.divergence, float(loss.beta or 0.0)
    if effective == "jsd" and beta_value in (0.0, 1.0):
        effective = "forward_kl" if beta_value == 0.0 else "reverse_kl"
    return DivergenceOptions(effective, beta_value, float(loss.temperature), loss.top_k)


def log_mix_ratio(d: torch.Tensor, beta: float) -> torch.Tensor:
    """log(beta + (1 - beta) e^d), stable for any d and exactly 0 at d == 0.

    With d = log(pS / pT) this is log(M / pT); with -d and 1 - beta, log(M / pS). The two branches never
    exponentiate a positive number, and ``where`` on clamped inputs keeps the unselected branch's gradient
    finite (no 0 * inf).
    """
    positive = d > 0  # [n, V]
    d_neg = torch.where(positive, 0.0, d)  # [n, V]
    d_pos = torch.where(positive, d, 0.0)  # [n, V]
    below = torch.log1p((1.0 - beta) * torch.expm1(d_neg))  # d <= 0
    above = d_pos + torch.log1p(beta * torch.expm1(-d_pos))  # d > 0
    return torch.where(positive, above, below)


def _jsd_log_ratios(ls: torch.Tensor, lt: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log(M / pT), log(M / pS)) [n, V] each, both from d = log pS - log pT.

    Each ratio is computed directly rather than one from the other (log(M / pS) = log(M / pT) - d would subtract
    two numbers near |d|, which loses digits where the distributions are far apart).
    """
    d = ls - lt  # [n, V]
    return log_mix_ratio(d, beta), log_mix_ratio(-d, 1.0 - beta)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities. [n, V] x 2 -> [n]"""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def divergence(student_scaled: torch.Tensor, teacher_scaled: torch.Tensor, options: DivergenceOptions) -> torch.Tensor:
    """D per row from tau-scaled logits a, b [n, V] (the definition; no tau^2 factor). -> [n]"""
    ls = F.log_softmax(student_scaled, dim=-1)  # [n, V]
    if options.top_k is not None:
        top_logits, top_ids = teacher_scaled.topk(options.top_k, dim=-1)  # [n, k]
        return _kl(F.log_softmax(top_logits, dim=-1), ls.gather(-1, top_ids))
    lt = F.log_softmax(teacher_scaled, dim=-1)  # [n, V]
    if options.divergence == "forward_kl":
        return _kl(lt, ls)
    if options.divergence == "reverse_kl":
        return _kl(ls, lt)
    beta = options.beta
    r_t, r_s = _jsd_log_ratios(ls, lt, beta)  # log(M / pT), log(M / pS)
    return beta * (lt.exp() * -r_t).sum(-1) + (1.0 - beta) * (ls.exp() * -r_s).sum(-1)


def _kl_and_grads(
    lp: torch.Tensor, lq: torch.Tensor, need_p: bool, need_q: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """KL(P || Q) per row and its gradients w.r.t. P's and Q's scaled logits: P (lp - lq - D) and Q - P.

    [c, V] log-probabilities x 2 (both consumed: written in place) -> D [c], dD/dp [c, V] | None, dD/dq | None.
    """
    p = lp.exp()  # [c, V]
    diff = lp.sub_(lq)  # [c, V]: log(P / Q)
    d = (p * diff).sum(-1)
    g_q = lq.exp_().sub_(p) if need_q else None  # Q - P
    g_p = diff.sub_(d[:, None]).mul_(p) if need_p else None  # P (log P/Q - D)
    return d, g_p, g_q


def divergence_and_grads(
    s: torch.Tensor, t: torch.Tensor, options: DivergenceOptions, vocab: int, need_s: bool, need_t: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """D per row and its gradients w.r.t. the tau-scaled logits a = s / tau and b = t / tau, for one chunk.

    [c, Vs], [c, Vt] -> D [c], dD/da [c, V] or None, dD/db [c, V] or None (float32, first ``vocab`` columns).
    Closed forms instead of autograd: no graph, and only a few float32 [c, V] tensors alive at once.
    """
    a = s[:, :vocab].float() / options.temperature  # [c, V]
    b = t[:, :vocab].float() / options.temperature  # [c, V]
    ls = F.log_softmax(a, dim=-1)  # [c, V]
    del a
    g_s = g_t = None
    if options.top_k is not None:
        top_logits, top_ids = b.topk(options.top_k, dim=-1)  # [c, k]
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
    if options.divergence == "forward_kl":  # KL(pT || pS): P = teacher, Q = student
        d, g_t, g_s = _kl_and_grads(lt, ls, need_t, need_s)
        return d, g_s, g_t
    if options.divergence == "reverse_kl":  # KL(pS || pT): P = student, Q = teacher
        return _kl_and_grads(ls, lt, need_s, need_t)
    # jsd: D = beta KL(pT || M) + (1 - beta) KL(pS || M) = beta sum pT (-r_t) + (1 - beta) sum pS (-r_s)
    beta = options.beta
    r_t, r_s = _jsd_log_ratios(ls, lt, beta)  # [c, V] each: log(M / pT), log(M / pS)
    ps, pt = ls.exp_(), lt.exp_()  # [c, V] each (in place: the log-probabilities are not needed any more)
    k_t = (pt * r_t).sum(-1).neg_()  # [c]: KL(pT || M)
    k_s = (ps * r_s).sum(-1).neg_()  # [c]: KL(pS || M)
    d = beta * k_t + (1.0 - beta) * k_s
    if need_s:
        g_s = r_s.neg_().sub_(k_s[:, None]).mul_(ps).mul_(1.0 - beta)  # (1-beta) pS (log pS/M - KL(pS||M))
    if need_t:
        g_t = r_t.neg_().sub_(k_t[:, None]).mul_(pt).mul_(beta)  # beta pT (log pT/M - KL(pT||M))
    return d, g_s, g_t
