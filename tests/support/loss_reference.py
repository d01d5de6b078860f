"""References and inputs for the loss tests.

Two references, on purpose:
- ``naive_divergence`` runs the package's own definition (``divergences.divergence``) in float64 over the full
  vocabulary; autograd through it is the gradient reference for the chunked loss's closed-form gradients;
- ``independent_divergence`` is written here from the textbook formulas with ``F.kl_div`` (forward / reverse KL,
  the top-k teacher) and a TRL-style generalized JSD (mixture by logsumexp); values are checked against it, so a
  wrong definition cannot pass by agreeing with itself.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import pytest
import torch
import torch.nn.functional as F

from swift_lingudistill.divergences import divergence, resolve_options
from swift_lingudistill.losses import TeacherHead

BF16 = torch.bfloat16
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(BF16, id="bf16")]
TEMPERATURES = [0.5, 1.0, 2.0]
VALUE_TOL = {"rtol": 1e-5, "atol": 1e-6}


class Config(NamedTuple):
    divergence: str
    beta: float | None = None
    top_k: int | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"divergence": self.divergence, "beta": self.beta, "top_k": self.top_k}


CONFIGS = [
    pytest.param(Config("forward_kl"), id="fkl"),
    pytest.param(Config("forward_kl", top_k=1), id="fkl-top1"),
    pytest.param(Config("forward_kl", top_k=5), id="fkl-top5"),
    pytest.param(Config("reverse_kl"), id="rkl"),
    pytest.param(Config("jsd", beta=0.0), id="jsd0"),
    pytest.param(Config("jsd", beta=0.3), id="jsd0.3"),
    pytest.param(Config("jsd", beta=0.5), id="jsd0.5"),
    pytest.param(Config("jsd", beta=1.0), id="jsd1"),
]
FULL_VOCAB_CONFIGS = [p for p in CONFIGS if p.values[0].top_k is None]


def naive_divergence(student: torch.Tensor, teacher: torch.Tensor, config: Config, temperature: float) -> torch.Tensor:
    """Per-row D in float64 on already-sliced [n, V] logits: the package's definition, differentiable."""
    options = resolve_options(config.divergence, config.beta, temperature, config.top_k)
    return divergence(student.double() / temperature, teacher.double() / temperature, options)


def trl_style_jsd(log_ps: torch.Tensor, log_pt: torch.Tensor, beta: float) -> torch.Tensor:
    """Generalized JSD per row as TRL computes it: M in log space by logsumexp; beta 0 / 1 are the two KLs."""
    if beta == 0.0:
        return F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(-1)  # KL(pT || pS)
    if beta == 1.0:
        return F.kl_div(log_pt, log_ps, reduction="none", log_target=True).sum(-1)  # KL(pS || pT)
    weights = torch.tensor([math.log1p(-beta), math.log(beta)], dtype=log_ps.dtype)
    log_m = torch.logsumexp(torch.stack([log_ps + weights[0], log_pt + weights[1]]), dim=0)
    to_teacher = F.kl_div(log_m, log_pt, reduction="none", log_target=True).sum(-1)  # KL(pT || M)
    to_student = F.kl_div(log_m, log_ps, reduction="none", log_target=True).sum(-1)  # KL(pS || M)
    return beta * to_teacher + (1.0 - beta) * to_student


def independent_divergence(student: torch.Tensor, teacher: torch.Tensor, config: Config, tau: float) -> torch.Tensor:
    """Per-row D in float64 from the textbook formulas; shares no code with the package."""
    log_ps = F.log_softmax(student.double() / tau, dim=-1)
    scaled = teacher.double() / tau
    if config.top_k is not None:
        top = torch.topk(scaled, config.top_k, dim=-1)
        log_pt_k = F.log_softmax(top.values, dim=-1)
        return F.kl_div(log_ps.gather(-1, top.indices), log_pt_k, reduction="none", log_target=True).sum(-1)
    log_pt = F.log_softmax(scaled, dim=-1)
    if config.divergence == "forward_kl":
        return F.kl_div(log_ps, log_pt, reduction="none", log_target=True).sum(-1)
    if config.divergence == "reverse_kl":
        return F.kl_div(log_pt, log_ps, reduction="none", log_target=True).sum(-1)
    return trl_style_jsd(log_ps, log_pt, 0.5 if config.beta is None else config.beta)


def naive_distill(
    student: torch.Tensor,
    teacher: torch.Tensor,
    weights: torch.Tensor,
    rows: torch.Tensor | None,
    config: Config,
    temperature: float,
    vocab: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_n w_n tau^2 D_n, tau^2 D) in float64, differentiable w.r.t. student and teacher."""
    selected = student if rows is None else student[rows]
    vocab = vocab or min(selected.shape[1], teacher.shape[1])
    per_token = temperature**2 * naive_divergence(selected[:, :vocab], teacher[:, :vocab], config, temperature)
    return (weights.double() * per_token).sum(), per_token


def independent_per_token(student, teacher, rows, config: Config, temperature: float, vocab: int | None):
    """tau^2 D per distilled row from ``independent_divergence`` (detached inputs)."""
    selected = (student if rows is None else student[rows]).detach()
    vocab = vocab or min(selected.shape[1], teacher.shape[1])
    return temperature**2 * independent_divergence(
        selected[:, :vocab], teacher.detach()[:, :vocab], config, temperature
    )


# --- inputs ---------------------------------------------------------------------------------------------------------


def random_logits(m: int, v: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    return (2.0 * torch.randn(m, v, generator=gen)).to(dtype)


def planted_ids(n: int, count: int, within: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, within, generator=gen).argsort(dim=-1)[:, :count]  # [n, count]


def teacher_logits(n: int, v: int, dtype: torch.dtype, gen: torch.Generator, top_k: int | None, vocab: int):
    """Random teacher logits; with top_k, the k + 1 largest (within the shared vocab) are planted far apart.

    Planting avoids ties at the top-k boundary (likely in bfloat16), where torch.topk may break ties differently
    in float32 and float64 and the test would compare two different, equally valid, top-k sets.
    """
    t = 2.0 * torch.randn(n, v, generator=gen)
    if top_k is not None:
        count = min(vocab, top_k + 1)
        t.scatter_(1, planted_ids(n, count, vocab, gen), (9.0 + 0.5 * torch.arange(count)).repeat(n, 1))
    return t.to(dtype)


def teacher_head(
    n: int, h: int, v: int, dtype: torch.dtype, gen: torch.Generator, *, bias: bool, top_k: int | None
) -> TeacherHead:
    """A random head; feature 0 is a constant 1 so that, with top_k, planted logits come out exact in any dtype."""
    hidden = torch.randn(n, h, generator=gen)
    hidden[:, 0] = 1.0
    weight = torch.randn(v, h, generator=gen) * (2.0 / math.sqrt(h))
    if top_k is not None:
        count = min(v, top_k + 1)
        ids = planted_ids(1, count, v, gen)[0]
        weight[ids] = 0.0
        weight[ids, 0] = 9.0 + 0.5 * torch.arange(count, dtype=torch.float32)
    b = 0.5 * torch.randn(v, generator=gen) if bias else None
    if b is not None and top_k is not None:
        b[ids] = 0.0
    return TeacherHead(hidden.to(dtype), weight.to(dtype), None if b is None else b.to(dtype))


def mixed_weights(n: int, gen: torch.Generator) -> torch.Tensor:
    w = 2.0 * torch.rand(n, generator=gen)
    w[::3] = 0.0
    return w


def grad_tol(dtype: torch.dtype, ref: torch.Tensor) -> dict[str, float]:
    """float32 buffers hold the float32 gradient; bfloat16 ones its rounding (8 significant bits)."""
    scale = float(ref.abs().max()) if ref.numel() else 1.0
    if dtype == torch.float32:
        return {"rtol": 1e-5, "atol": 3e-5 * scale}  # float32 log-probs of ~-30 carry ~1e-5 relative error
    return {"rtol": 1e-2, "atol": 1e-3 * scale}
