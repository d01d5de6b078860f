"""The divergence definitions (``swift_lingudistill.divergences``): values against textbook formulas, the closed-form
gradients against autograd, exact invariants, numerical stability, and the options' rules (from the schema)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.testing import assert_close

from swift_lingudistill.config import ConfigError
from swift_lingudistill.divergences import divergence, divergence_and_grads, resolve_options
from swift_lingudistill.losses import distill_sum
from tests.support.loss_reference import (
    CONFIGS,
    DTYPES,
    FULL_VOCAB_CONFIGS,
    TEMPERATURES,
    VALUE_TOL,
    Config,
    independent_divergence,
    naive_divergence,
    random_logits,
    teacher_logits,
    trl_style_jsd,
)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("config", CONFIGS)
def test_definition_matches_the_textbook_formulas(config: Config, temperature: float) -> None:
    """``divergence`` in float64 equals F.kl_div / a TRL-style generalized JSD written in the tests."""
    gen = torch.Generator().manual_seed(8)
    student = random_logits(9, 64, torch.float64, gen)
    teacher = teacher_logits(9, 64, torch.float64, gen, config.top_k, 64).double()
    got = naive_divergence(student, teacher, config, temperature)
    want = independent_divergence(student, teacher, config, temperature)
    assert got.dtype == torch.float64 and (want > 0).all()
    assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
def test_closed_form_gradients_equal_autograd_of_the_definition(config: Config, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(9)
    student = random_logits(9, 64, dtype, gen)
    teacher = teacher_logits(9, 60, dtype, gen, config.top_k, 60)
    options = resolve_options(config.divergence, config.beta, 2.0, config.top_k)
    d, g_s, g_t = divergence_and_grads(student, teacher, options, 60, True, True)

    a = (student[:, :60].double() / 2.0).requires_grad_()
    b = (teacher.double() / 2.0).requires_grad_()
    ref = divergence(a, b, options)
    ref_s, ref_t = torch.autograd.grad(ref.sum(), [a, b])
    assert d.dtype == g_s.dtype == g_t.dtype == torch.float32
    assert_close(d.double(), ref.detach(), **VALUE_TOL)
    assert_close(g_s.double(), ref_s, rtol=1e-5, atol=3e-6)
    assert_close(g_t.double(), ref_t, rtol=1e-5, atol=3e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("config", FULL_VOCAB_CONFIGS)
def test_identical_student_and_teacher_give_zero(config: Config, temperature: float, dtype: torch.dtype) -> None:
    """Invariant: D(p, p) is exactly 0 (value and gradient), for the chunked loss and the definition."""
    gen = torch.Generator().manual_seed(6)
    logits = random_logits(13, 211, dtype, gen)
    student = logits.clone().requires_grad_()
    teacher = logits.clone().requires_grad_()
    total, per_token = distill_sum(
        student, teacher, torch.rand(13, generator=gen) + 0.5, temperature=temperature, chunk_size=5, **config.kwargs()
    )
    total.backward()
    assert torch.equal(per_token, torch.zeros(13)), f"D(p, p) must be exactly 0, got {per_token}"
    assert total.item() == 0.0
    assert student.grad.abs().max() < 1e-6 and teacher.grad.abs().max() < 1e-6
    options = resolve_options(config.divergence, config.beta, temperature, config.top_k)
    scaled = logits.float() / temperature
    assert torch.equal(divergence(scaled, scaled, options), torch.zeros(13))


def test_top_k_is_not_an_identity_invariant_but_top_k_equal_vocab_is_full_forward_kl() -> None:
    gen = torch.Generator().manual_seed(7)
    logits = random_logits(6, 40, torch.float32, gen)
    other = random_logits(6, 40, torch.float32, gen)
    _, restricted = distill_sum(logits, logits, torch.ones(6), top_k=3)
    assert (restricted > 0).all(), "top-k renormalisation moves mass, so D(p, p) > 0 unless k == vocab"
    _, all_k = distill_sum(other, logits, torch.ones(6), top_k=40)
    _, full = distill_sum(other, logits, torch.ones(6))
    assert_close(all_k, full, **VALUE_TOL)


def test_jsd_is_stable_for_far_apart_distributions() -> None:
    student = torch.tensor([[60.0, -60.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-60.0, 60.0, 0.0], [100.0, -100.0, 0.0]], requires_grad=True)
    for beta in (0.1, 0.5, 0.9):
        total, d = distill_sum(student, teacher, torch.ones(2), divergence="jsd", beta=beta)
        g_s, g_t = torch.autograd.grad(total, [student, teacher])
        assert torch.isfinite(d).all() and torch.isfinite(g_s).all() and torch.isfinite(g_t).all()
        ref = independent_divergence(student.detach(), teacher.detach(), Config("jsd", beta), 1.0)
        assert_close(d.double(), ref, **VALUE_TOL)


@pytest.mark.parametrize("beta", [0.001, 0.999])
def test_jsd_keeps_its_digits_at_extreme_logit_gaps(beta: float) -> None:
    """Logits of scale 100 and a lopsided mixture: JSD is a sum of terms whose log-ratios to M are near 0 where
    the mass is. Computing log(M / pS) as log(M / pT) - log(pS / pT) subtracted two numbers near 100 there and
    kept only ~3 digits (8e-4 relative error at beta 0.001); each ratio computed on its own keeps float32's."""
    gen = torch.Generator().manual_seed(0)
    student = 100.0 * torch.randn(16, 1000, generator=gen)
    teacher = 100.0 * torch.randn(16, 1000, generator=gen)
    _, got = distill_sum(student, teacher, torch.ones(16), divergence="jsd", beta=beta)
    log_ps, log_pt = torch.log_softmax(student.double(), -1), torch.log_softmax(teacher.double(), -1)
    want = trl_style_jsd(log_ps, log_pt, beta)
    assert (want > 1e-3).all()
    assert_close(got.double(), want, rtol=2e-5, atol=0.0)


BAD_OPTIONS = [
    pytest.param({"divergence": "reverse_kl", "top_k": 5}, "top_k needs divergence forward_kl", id="top_k-rkl"),
    pytest.param({"divergence": "jsd", "beta": 0.5, "top_k": 5}, "top_k needs divergence forward_kl", id="top_k-jsd"),
    pytest.param({"top_k": 0}, "top_k = 0: Input should be greater than or equal to 1", id="top_k-zero"),
    pytest.param({"top_k": 2.5}, "top_k = 2.5: Input should be a valid integer", id="top_k-fraction"),
    pytest.param({"divergence": "jsd", "beta": -0.1}, r"beta = -0\.1: Input should be greater", id="beta-negative"),
    pytest.param({"divergence": "jsd", "beta": 1.5}, r"beta = 1\.5: Input should be less", id="beta-above-one"),
    pytest.param({"divergence": "jsd", "beta": float("nan")}, "beta = nan", id="beta-nan"),
    pytest.param({"beta": 0.5}, "beta only applies to divergence jsd", id="beta-forward_kl"),
    pytest.param({"divergence": "reverse_kl", "beta": 0.0}, "beta only applies to divergence jsd", id="beta-rkl"),
    pytest.param({"temperature": 0.0}, r"temperature = 0\.0: Input should be greater than 0", id="temperature-zero"),
    pytest.param({"temperature": -1.0}, r"temperature = -1\.0", id="temperature-negative"),
    pytest.param({"temperature": float("inf")}, "temperature = inf", id="temperature-inf"),
    pytest.param({"temperature": 101.0}, "less than or equal to 100", id="temperature-above-the-schema-bound"),
    pytest.param({"divergence": "kl"}, "divergence = 'kl': Input should be 'forward_kl'", id="unknown-divergence"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_options_follow_the_schema_rules(options: dict[str, Any], message: str) -> None:
    """The loss refuses exactly what a plugin config refuses, with the schema's own message."""
    with pytest.raises(ConfigError, match=message):
        distill_sum(torch.zeros(3, 21), torch.zeros(3, 20), torch.ones(3), **options)


def test_jsd_beta_default_comes_from_the_schema() -> None:
    from swift_lingudistill.config import JSD_DEFAULT_BETA, LossConfig

    assert resolve_options("jsd").beta == JSD_DEFAULT_BETA == LossConfig(divergence="jsd").beta
    assert resolve_options("jsd", 0.0).divergence == "forward_kl" and resolve_options("jsd", 1.0).divergence == (
        "reverse_kl"
    )
