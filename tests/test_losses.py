"""swift_lingudistill.losses against a naive float64, full-vocabulary reference: values and gradients.

The reference below is deliberately written the obvious way (explicit log_softmax, explicit JSD mixture, torch.topk)
and shares no code with the module under test.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from swift_lingudistill.losses import TeacherHead, cross_entropy_sum, distill_sum, token_divergence

BF16 = torch.bfloat16
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(BF16, id="bf16")]
TEMPERATURES = [0.5, 1.0, 2.0]


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


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: with a busy CPU, intra-op threads only spin, which made this file ~8x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------------------------
# naive float64 reference
# ---------------------------------------------------------------------------------------------------------------------


def naive_divergence(student: torch.Tensor, teacher: torch.Tensor, config: Config, temperature: float) -> torch.Tensor:
    """Per-row D in float64 on already-sliced [n, V] logits, written out term by term."""
    log_ps = torch.log_softmax(student.double() / temperature, dim=-1)
    ps = log_ps.exp()
    t = teacher.double() / temperature
    if config.top_k is not None:
        top_values, top_ids = torch.topk(t, config.top_k, dim=-1)
        log_pt_k = torch.log_softmax(top_values, dim=-1)
        return (log_pt_k.exp() * (log_pt_k - log_ps.gather(1, top_ids))).sum(-1)
    log_pt = torch.log_softmax(t, dim=-1)
    pt = log_pt.exp()
    forward = (pt * (log_pt - log_ps)).sum(-1)
    reverse = (ps * (log_ps - log_pt)).sum(-1)
    if config.divergence == "forward_kl" or (config.divergence == "jsd" and config.beta == 0.0):
        return forward
    if config.divergence == "reverse_kl" or (config.divergence == "jsd" and config.beta == 1.0):
        return reverse
    beta = config.beta
    log_m = torch.log(beta * pt + (1 - beta) * ps)
    return beta * (pt * (log_pt - log_m)).sum(-1) + (1 - beta) * (ps * (log_ps - log_m)).sum(-1)


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


# ---------------------------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------------------------


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


VALUE_TOL = {"rtol": 1e-5, "atol": 1e-6}


def grad_tol(dtype: torch.dtype, ref: torch.Tensor) -> dict[str, float]:
    """float32 buffers hold the float32 gradient; bfloat16 ones its rounding (8 significant bits)."""
    scale = float(ref.abs().max()) if ref.numel() else 1.0
    if dtype == torch.float32:
        return {"rtol": 1e-5, "atol": 3e-5 * scale}  # float32 log-probs of ~-30 carry ~1e-5 relative error
    return {"rtol": 1e-2, "atol": 1e-3 * scale}


# ---------------------------------------------------------------------------------------------------------------------
# distill_sum: values and gradients on a grid
# ---------------------------------------------------------------------------------------------------------------------


class Shape(NamedTuple):
    m: int  # student rows
    vs: int  # student width
    vt: int  # teacher width
    vocab: int | None
    n_rows: int | None  # None: all rows; else a random unsorted subset of this size
    chunk: int


SHAPES = [
    pytest.param(Shape(1, 5, 5, None, None, 4), id="M1-V5-chunk>N"),
    pytest.param(Shape(7, 131, 131, None, None, 7), id="M7-V131-chunk=N"),
    pytest.param(Shape(37, 1001, 1001, None, 23, 5), id="M37-V1001-rows-chunk<N"),
    pytest.param(Shape(7, 132, 131, None, 4, 3), id="student-wider"),
    pytest.param(Shape(37, 1000, 1001, 1000, None, 16), id="teacher-wider-vocab"),
    pytest.param(Shape(7, 131, 140, 100, 5, 2), id="vocab-below-both"),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("config", CONFIGS)
def test_distill_sum_matches_reference(config: Config, temperature: float, dtype: torch.dtype, shape: Shape) -> None:
    gen = torch.Generator().manual_seed(0)
    rows = None if shape.n_rows is None else torch.randperm(shape.m, generator=gen)[: shape.n_rows]
    n = shape.m if rows is None else shape.n_rows
    vocab = shape.vocab or min(shape.vs, shape.vt)
    student = random_logits(shape.m, shape.vs, dtype, gen).requires_grad_()
    teacher = teacher_logits(n, shape.vt, dtype, gen, config.top_k, vocab)
    weights = mixed_weights(n, gen)

    total, per_token = distill_sum(
        student,
        teacher,
        weights,
        rows=rows,
        temperature=temperature,
        vocab=shape.vocab,
        chunk_size=shape.chunk,
        **config.kwargs(),
    )
    (3.0 * total).backward()  # a non-unit outer gradient checks that backward scales the saved buffers

    student64 = student.detach().double().requires_grad_()
    ref_total, ref_per_token = naive_distill(student64, teacher, weights, rows, config, temperature, shape.vocab)
    (ref_grad,) = torch.autograd.grad(3.0 * ref_total, student64)

    assert total.dtype == torch.float32 and total.dim() == 0
    assert per_token.dtype == torch.float32 and per_token.shape == (n,) and not per_token.requires_grad
    assert_close(per_token.double(), ref_per_token.detach(), **VALUE_TOL)
    assert_close(total.double(), ref_total.detach(), **VALUE_TOL)
    assert student.grad.dtype == dtype and student.grad.shape == student.shape
    assert_close(student.grad.double(), ref_grad, **grad_tol(dtype, ref_grad))
    assert not student.grad[:, vocab:].any(), "columns beyond the shared vocabulary must get no gradient"
    if rows is not None:
        unselected = torch.ones(shape.m, dtype=torch.bool)
        unselected[rows] = False
        assert not student.grad[unselected].any(), "rows that are not distilled must get exactly zero gradient"


def test_float16_inputs() -> None:
    gen = torch.Generator().manual_seed(1)
    student = random_logits(9, 50, torch.float16, gen).requires_grad_()
    teacher = random_logits(9, 50, torch.float16, gen)
    weights = torch.rand(9, generator=gen)
    total, _ = distill_sum(student, teacher, weights, divergence="jsd", beta=0.3, temperature=2.0, chunk_size=4)
    total.backward()
    student64 = student.detach().double().requires_grad_()
    ref_total, _ = naive_distill(student64, teacher, weights, None, Config("jsd", 0.3), 2.0, None)
    (ref_grad,) = torch.autograd.grad(ref_total, student64)
    assert_close(total.double(), ref_total.detach(), **VALUE_TOL)
    assert student.grad.dtype == torch.float16
    assert_close(student.grad.double(), ref_grad, rtol=2e-3, atol=1e-4 * float(ref_grad.abs().max()))


# ---------------------------------------------------------------------------------------------------------------------
# teacher as logits or as a head, with and without gradient
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("teacher_grad", [True, False], ids=["teacher-grad", "teacher-frozen"])
@pytest.mark.parametrize("kind", ["logits", "head", "head+bias"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
def test_teacher_logits_or_head(config: Config, dtype: torch.dtype, kind: str, teacher_grad: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    m, n, vs, vt, h, temperature = 11, 6, 131, 130, 16, 2.0
    rows = torch.randperm(m, generator=gen)[:n]
    student = random_logits(m, vs, dtype, gen).requires_grad_()
    weights = mixed_weights(n, gen)
    if kind == "logits":
        upstream = teacher_logits(n, vt, dtype, gen, config.top_k, vt).requires_grad_(teacher_grad)
        teacher = upstream * 2.0 if teacher_grad else upstream  # *2 is exact: values unchanged, gradient doubled
        ref_teacher = teacher.detach().double()
    else:
        head = teacher_head(n, h, vt, dtype, gen, bias=kind == "head+bias", top_k=config.top_k)
        upstream = head.hidden.requires_grad_(teacher_grad)
        teacher = head._replace(hidden=upstream * 2.0 if teacher_grad else upstream)
        ref_teacher = F.linear(teacher.hidden.detach(), head.weight, head.bias).double()  # logits in input dtype

    total, per_token = distill_sum(
        student, teacher, weights, rows=rows, temperature=temperature, chunk_size=4, **config.kwargs()
    )
    (2.5 * total).backward()

    student64 = student.detach().double().requires_grad_()
    upstream64 = upstream.detach().double().requires_grad_()
    if kind == "logits":
        teacher64 = upstream64 * 2.0 if teacher_grad else upstream64
    else:
        exact = upstream64 * 2.0 if teacher_grad else upstream64
        exact = F.linear(exact, head.weight.double(), None if head.bias is None else head.bias.double())
        teacher64 = exact + (ref_teacher - exact).detach()  # the input-dtype values, with the float64 gradient
    ref_total, ref_per_token = naive_distill(student64, teacher64, weights, rows, config, temperature, None)
    ref_grads = torch.autograd.grad(2.5 * ref_total, [student64, upstream64] if teacher_grad else [student64])

    head_bf16 = kind != "logits" and dtype == BF16  # bf16 matmul of a chunk may round differently than of all rows
    value_tol = {"rtol": 5e-3, "atol": 1e-4} if head_bf16 else VALUE_TOL
    assert_close(per_token.double(), ref_per_token.detach(), **value_tol)
    assert_close(total.double(), ref_total.detach(), **value_tol)
    assert_close(student.grad.double(), ref_grads[0], **grad_tol(dtype, ref_grads[0]))
    if teacher_grad:
        assert upstream.grad.dtype == dtype and upstream.grad.shape == upstream.shape
        tol = grad_tol(dtype, ref_grads[1])
        if kind != "logits" and dtype == BF16:  # the hidden gradient is a bf16 matmul of bf16-rounded logit grads
            tol = {"rtol": 3e-2, "atol": 1e-2 * float(ref_grads[1].abs().max())}
        assert_close(upstream.grad.double(), ref_grads[1], **tol)
        # A top-1 teacher is one-hot whatever its logits, so it gets exactly no gradient; otherwise some.
        assert (upstream.grad.abs().sum() > 0) == (config.top_k != 1)
    else:
        assert upstream.grad is None
    if kind != "logits":
        assert head.weight.grad is None and (head.bias is None or head.bias.grad is None)


def test_teacher_head_with_mixed_dtypes_runs_in_the_heads_dtype() -> None:
    """A float32 hidden against a bf16 head (e.g. after an upcasting norm) is cast per chunk, like autocast does."""
    gen = torch.Generator().manual_seed(12)
    student = random_logits(6, 40, torch.float32, gen).requires_grad_()
    head = teacher_head(6, 8, 40, BF16, gen, bias=True, top_k=None)
    hidden = head.hidden.float().requires_grad_()
    total, per_token = distill_sum(student, TeacherHead(hidden, head.weight, head.bias.float()), torch.ones(6))
    total.backward()
    ref_teacher = F.linear(head.hidden, head.weight, head.bias)
    ref_total, ref_per_token = naive_distill(
        student.detach(), ref_teacher, torch.ones(6), None, Config("forward_kl"), 1.0, None
    )
    assert_close(per_token.double(), ref_per_token, rtol=5e-3, atol=1e-4)
    assert_close(total.double(), ref_total, rtol=5e-3, atol=1e-4)
    assert hidden.grad.dtype == torch.float32 and hidden.grad.abs().sum() > 0


def test_teacher_head_must_be_frozen() -> None:
    gen = torch.Generator().manual_seed(3)
    student = random_logits(4, 20, torch.float32, gen)
    head = teacher_head(4, 8, 20, torch.float32, gen, bias=True, top_k=None)
    with pytest.raises(ValueError, match="frozen"):
        distill_sum(student, head._replace(weight=head.weight.clone().requires_grad_()), torch.ones(4))
    with pytest.raises(ValueError, match="frozen"):
        distill_sum(student, head._replace(bias=head.bias.clone().requires_grad_()), torch.ones(4))


# ---------------------------------------------------------------------------------------------------------------------
# weights, empty selections, exact invariants
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
def test_zero_weights_contribute_exactly_nothing(config: Config, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    m, n, v = 10, 8, 97
    rows = torch.randperm(m, generator=gen)[:n]
    student = random_logits(m, v, dtype, gen).requires_grad_()
    teacher = teacher_logits(n, v, dtype, gen, config.top_k, v).requires_grad_()

    weights = torch.zeros(n)
    total, per_token = distill_sum(
        student, teacher, weights, rows=rows, temperature=2.0, chunk_size=3, **config.kwargs()
    )
    total.backward()
    assert total.item() == 0.0
    assert not student.grad.any() and not teacher.grad.any()
    ref_per_token = naive_distill(student.detach(), teacher.detach(), weights, rows, config, 2.0, None)[1]
    assert_close(per_token.double(), ref_per_token, **VALUE_TOL)  # still logged for zero-weight rows
    assert (per_token > 0).all()

    student.grad = teacher.grad = None
    weights = torch.tensor([0.0, 1.0, 0.0, 0.5, 2.0, 0.0, 0.0, 1.0])
    total, _ = distill_sum(student, teacher, weights, rows=rows, temperature=2.0, chunk_size=3, **config.kwargs())
    total.backward()
    zero = weights == 0
    assert not student.grad[rows[zero]].any() and not teacher.grad[zero].any()
    assert student.grad[rows[~zero]].abs().sum(-1).min() > 0
    if config.top_k != 1:  # a top-1 teacher is one-hot whatever its logits: no teacher gradient at all
        assert teacher.grad[~zero].abs().sum(-1).min() > 0
    assert_close(total.double(), (weights.double() * ref_per_token).sum(), **VALUE_TOL)


@pytest.mark.parametrize("teacher_kind", ["logits", "head"])
@pytest.mark.parametrize("config", CONFIGS)
def test_empty_selection(config: Config, teacher_kind: str) -> None:
    gen = torch.Generator().manual_seed(5)
    student = random_logits(5, 30, BF16, gen).requires_grad_()
    hidden = torch.randn(0, 8, dtype=BF16, requires_grad=True)
    teacher = (
        torch.zeros(0, 30, dtype=BF16)
        if teacher_kind == "logits"
        else TeacherHead(hidden, torch.randn(30, 8, dtype=BF16))
    )
    rows = torch.zeros(0, dtype=torch.long)
    total, per_token = distill_sum(student, teacher, torch.zeros(0), rows=rows, **config.kwargs())
    assert total.shape == () and total.item() == 0.0 and per_token.shape == (0,)
    total.backward()
    assert student.grad.shape == student.shape and not student.grad.any()
    if teacher_kind == "head":
        assert hidden.grad.shape == (0, 8)

    empty = torch.zeros(0, 30, requires_grad=True)
    total, per_token = distill_sum(empty, torch.zeros(0, 30), torch.zeros(0), **config.kwargs())
    total.backward()
    assert total.item() == 0.0 and per_token.shape == (0,) and empty.grad.shape == (0, 30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("config", FULL_VOCAB_CONFIGS)
def test_identical_student_and_teacher_give_zero(config: Config, temperature: float, dtype: torch.dtype) -> None:
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

    divergence = token_divergence(student, teacher, temperature=temperature, **config.kwargs())
    assert torch.equal(divergence, torch.zeros(13))


def test_top_k_is_not_an_identity_invariant_but_top_k_equal_vocab_is_full_forward_kl() -> None:
    gen = torch.Generator().manual_seed(7)
    logits = random_logits(6, 40, torch.float32, gen)
    restricted = token_divergence(logits, logits, top_k=3)
    assert (restricted > 0).all(), "top-k renormalisation moves mass, so D(p, p) > 0 unless k == vocab"
    other = random_logits(6, 40, torch.float32, gen)
    assert_close(token_divergence(other, logits, top_k=40), token_divergence(other, logits), **VALUE_TOL)


# ---------------------------------------------------------------------------------------------------------------------
# token_divergence on its own
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
def test_token_divergence_matches_reference(config: Config, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(8)
    student = random_logits(9, 64, dtype, gen).requires_grad_()
    teacher = teacher_logits(9, 60, dtype, gen, config.top_k, 60).requires_grad_()
    d = token_divergence(student, teacher, temperature=2.0, **config.kwargs())
    assert d.dtype == torch.float32 and d.shape == (9,)
    upstream = torch.randn(9, generator=gen)
    student_grad, teacher_grad = torch.autograd.grad(d, [student, teacher], upstream.to(d.dtype))

    student64 = student.detach().double().requires_grad_()
    teacher64 = teacher.detach().double().requires_grad_()
    ref = naive_divergence(student64[:, :60], teacher64, config, 2.0)  # no tau^2 factor here
    ref_grads = torch.autograd.grad(ref, [student64, teacher64], upstream.double())
    assert_close(d.double(), ref.detach(), **VALUE_TOL)
    assert_close(student_grad.double(), ref_grads[0], **grad_tol(dtype, ref_grads[0]))
    assert_close(teacher_grad.double(), ref_grads[1], **grad_tol(dtype, ref_grads[1]))


def test_jsd_is_stable_for_far_apart_distributions() -> None:
    student = torch.tensor([[60.0, -60.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-60.0, 60.0, 0.0], [100.0, -100.0, 0.0]], requires_grad=True)
    for beta in (0.1, 0.5, 0.9):
        d = token_divergence(student, teacher, divergence="jsd", beta=beta)
        (g_s, g_t) = torch.autograd.grad(d.sum(), [student, teacher])
        ref = naive_divergence(student.detach(), teacher.detach(), Config("jsd", beta), 1.0)
        assert torch.isfinite(d).all() and torch.isfinite(g_s).all() and torch.isfinite(g_t).all()
        assert_close(d.double(), ref, **VALUE_TOL)


# ---------------------------------------------------------------------------------------------------------------------
# cross_entropy_sum
# ---------------------------------------------------------------------------------------------------------------------


def ignore_pattern(name: str, m: int, gen: torch.Generator) -> torch.Tensor:
    if name == "all-ignored":
        return torch.ones(m, dtype=torch.bool)
    if name == "none-ignored":
        return torch.zeros(m, dtype=torch.bool)
    return torch.arange(m) % 2 == 1  # alternating


@pytest.mark.parametrize("chunk_size", [3, 37, 100])
@pytest.mark.parametrize("pattern", ["all-ignored", "none-ignored", "alternating"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_sum_matches_reference(dtype: torch.dtype, pattern: str, chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(9)
    m, v = 37, 131
    logits = random_logits(m, v, dtype, gen).requires_grad_()
    labels = torch.randint(0, v, (m,), generator=gen)
    ignored = ignore_pattern(pattern, m, gen)
    labels[ignored] = -100
    weights = mixed_weights(m, gen)

    total, per_token = cross_entropy_sum(logits, labels, weights, chunk_size=chunk_size)
    (0.5 * total).backward()

    logits64 = logits.detach().double().requires_grad_()
    ref_per_token = F.cross_entropy(logits64, labels, reduction="none", ignore_index=-100)
    ref_total = (weights.double() * ref_per_token)[~ignored].sum()
    (ref_grad,) = torch.autograd.grad(0.5 * ref_total, logits64)

    assert total.dtype == torch.float32 and total.dim() == 0
    assert per_token.dtype == torch.float32 and per_token.shape == (m,) and not per_token.requires_grad
    assert_close(per_token.double(), ref_per_token.detach(), **VALUE_TOL)
    assert_close(total.double(), ref_total.detach(), **VALUE_TOL)
    assert logits.grad.dtype == dtype
    assert_close(logits.grad.double(), ref_grad, **grad_tol(dtype, ref_grad))
    assert not per_token[ignored].any()
    no_gradient = ignored | (weights == 0)
    assert not logits.grad[no_gradient].any(), "ignored and zero-weight rows must get exactly zero gradient"


def test_cross_entropy_sum_empty_and_errors() -> None:
    logits = torch.zeros(0, 10, requires_grad=True)
    total, per_token = cross_entropy_sum(logits, torch.zeros(0, dtype=torch.long), torch.zeros(0))
    total.backward()
    assert total.item() == 0.0 and per_token.shape == (0,) and logits.grad.shape == (0, 10)
    with pytest.raises(ValueError, match="labels must be in"):
        cross_entropy_sum(torch.zeros(2, 10), torch.tensor([3, 10]), torch.ones(2))
    with pytest.raises(ValueError, match="labels must be in"):
        cross_entropy_sum(torch.zeros(2, 10), torch.tensor([-1, 0]), torch.ones(2))
    with pytest.raises(ValueError, match="weights"):
        cross_entropy_sum(torch.zeros(2, 10), torch.tensor([1, 0]), torch.ones(3))
    with pytest.raises(ValueError, match="labels must be a 1-D int64/int32"):
        cross_entropy_sum(torch.zeros(2, 10), torch.tensor([1.0, 0.0]), torch.ones(2))
    with pytest.raises(ValueError, match="chunk_size"):
        cross_entropy_sum(torch.zeros(2, 10), torch.tensor([1, 0]), torch.ones(2), chunk_size=0)


# ---------------------------------------------------------------------------------------------------------------------
# argument errors
# ---------------------------------------------------------------------------------------------------------------------

BAD_OPTIONS = [
    pytest.param({"divergence": "reverse_kl", "top_k": 5}, "top_k=5 only works", id="top_k-reverse_kl"),
    pytest.param({"divergence": "jsd", "beta": 0.5, "top_k": 5}, "top_k=5 only works", id="top_k-jsd"),
    pytest.param({"top_k": 0}, "top_k=0", id="top_k-zero"),
    pytest.param({"top_k": 2.0}, "top_k=2.0", id="top_k-float"),
    pytest.param({"top_k": 25}, "exceeds the vocabulary", id="top_k-above-vocab"),
    pytest.param({"divergence": "jsd", "beta": -0.1}, r"beta=-0\.1", id="beta-negative"),
    pytest.param({"divergence": "jsd", "beta": 1.5}, r"beta=1\.5", id="beta-above-one"),
    pytest.param({"divergence": "jsd", "beta": float("nan")}, "beta=nan", id="beta-nan"),
    pytest.param({"beta": 0.5}, "beta only applies to divergence jsd", id="beta-forward_kl"),
    pytest.param({"divergence": "reverse_kl", "beta": 0.0}, "beta only applies to divergence jsd", id="beta-rkl"),
    pytest.param({"temperature": 0.0}, "temperature=0.0", id="temperature-zero"),
    pytest.param({"temperature": -1.0}, "temperature=-1.0", id="temperature-negative"),
    pytest.param({"temperature": float("inf")}, "temperature=inf", id="temperature-inf"),
    pytest.param({"divergence": "kl"}, "divergence='kl'", id="unknown-divergence"),
    pytest.param({"vocab": 21}, "vocab=21", id="vocab-too-wide"),
    pytest.param({"vocab": 0}, "vocab=0", id="vocab-zero"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_options_raise_value_error(options: dict[str, Any], message: str) -> None:
    student, teacher = torch.zeros(3, 21), torch.zeros(3, 20)
    with pytest.raises(ValueError, match=message):
        token_divergence(student, teacher, **options)
    with pytest.raises(ValueError, match=message):
        distill_sum(student, teacher, torch.ones(3), **options)


def test_bad_shapes_raise_value_error() -> None:
    student, teacher = torch.zeros(4, 10), torch.zeros(4, 10)
    with pytest.raises(ValueError, match="weights"):
        distill_sum(student, teacher, torch.ones(3))
    with pytest.raises(ValueError, match="teacher logits have 4 rows but 2"):
        distill_sum(student, teacher, torch.ones(2), rows=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="rows must index"):
        distill_sum(student, teacher[:2], torch.ones(2), rows=torch.tensor([0, 4]))
    for bad_rows in (torch.tensor([0.0, 1.0]), torch.tensor([True, False]), [0, 1]):
        with pytest.raises(ValueError, match="rows must be a 1-D int64/int32 tensor"):
            distill_sum(student, teacher[:2], torch.ones(2), rows=bad_rows)
    with pytest.raises(ValueError, match="chunk_size"):
        distill_sum(student, teacher, torch.ones(4), chunk_size=0)
    with pytest.raises(ValueError, match="student_logits must be a 2-D"):
        distill_sum(torch.zeros(4), teacher, torch.ones(4))
    with pytest.raises(ValueError, match="same tokens"):
        token_divergence(student, teacher[:3])
    with pytest.raises(ValueError, match=r"TeacherHead.hidden must be \[3, H\]"):
        distill_sum(student, TeacherHead(torch.zeros(4, 8), torch.zeros(10, 8)), torch.ones(3), rows=torch.arange(3))
    with pytest.raises(ValueError, match=r"TeacherHead.weight must be \[V_t, 8\]"):
        distill_sum(student, TeacherHead(torch.zeros(4, 8), torch.zeros(10, 7)), torch.ones(4))


# ---------------------------------------------------------------------------------------------------------------------
# memory shape: no full-size float32 [M, V] tensor is created or saved
# ---------------------------------------------------------------------------------------------------------------------


class _RecordOutputs(TorchDispatchMode):
    """Records (dtype, shape) of every tensor any op produces, including ones freed right away."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.dtype, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen += [(t.dtype, tuple(t.shape)) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        return out


def _full_float32(records: list[tuple[torch.dtype, tuple[int, ...]]], m: int, v: int) -> list[tuple[int, ...]]:
    return [shape for dtype, shape in records if dtype == torch.float32 and math.prod(shape) >= m * v]


def _run_recorded(fn) -> tuple[list, list]:
    saved: list[tuple[torch.dtype, tuple[int, ...]]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append((t.dtype, tuple(t.shape)))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _RecordOutputs() as mode:
        fn()
    return saved, mode.seen


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[2], CONFIGS[5]])
def test_no_full_size_float32_intermediates(config: Config) -> None:
    gen = torch.Generator().manual_seed(10)
    m, v, chunk = 64, 50000, 8
    student = random_logits(m, v, BF16, gen).requires_grad_()
    teacher = random_logits(m, v, BF16, gen).requires_grad_()
    weights = torch.rand(m, generator=gen)

    def chunked() -> None:
        total, _ = distill_sum(student, teacher, weights, chunk_size=chunk, **config.kwargs())
        saved_by_ctx = total.grad_fn.saved_tensors  # only the two gradient buffers, in the inputs' dtype
        assert [(t.dtype, tuple(t.shape)) for t in saved_by_ctx] == [(BF16, (m, v)), (BF16, (m, v))]
        total.backward()

    def naive() -> None:
        (weights * token_divergence(student, teacher, **config.kwargs())).sum().backward()

    saved, seen = _run_recorded(chunked)
    assert seen and saved, "the recorders saw nothing: the check would be vacuous"
    assert not _full_float32(saved, m, v), "a full-size float32 tensor was saved for backward"
    assert not _full_float32(seen, m, v), "a full-size float32 tensor was created"
    assert student.grad.dtype == BF16 and teacher.grad.dtype == BF16

    # The same recorders do catch the unchunked computation, so the assertions above can fail.
    saved, seen = _run_recorded(naive)
    assert _full_float32(saved, m, v) and _full_float32(seen, m, v)


def test_cross_entropy_has_no_full_size_float32_intermediates() -> None:
    gen = torch.Generator().manual_seed(11)
    m, v = 64, 50000
    logits = random_logits(m, v, BF16, gen).requires_grad_()
    labels = torch.randint(0, v, (m,), generator=gen)
    labels[::4] = -100

    def chunked() -> None:
        total, _ = cross_entropy_sum(logits, labels, torch.ones(m), chunk_size=8)
        total.backward()

    saved, seen = _run_recorded(chunked)
    assert seen and not _full_float32(saved, m, v) and not _full_float32(seen, m, v)
    assert logits.grad.dtype == BF16

    saved, seen = _run_recorded(lambda: F.cross_entropy(logits.float(), labels).backward())
    assert _full_float32(seen, m, v)


# ---------------------------------------------------------------------------------------------------------------------
# fused CE + distillation (what a training step calls)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [2, 5, 64])
@pytest.mark.parametrize("teacher_kind", ["logits", "head"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
def test_fused_loss_matches_the_naive_reference(config: Config, dtype: torch.dtype, teacher_kind: str, chunk_size: int):
    """CE on every row + w tau^2 D on the selected rows: values, per-row values and gradients (student and
    teacher side) equal a float64 full-vocabulary reference; chunks cut through the selected rows."""
    from swift_lingudistill.losses import fused_loss

    gen = torch.Generator().manual_seed(11)
    m, vs, vt, h, tau = 13, 131, 127, 9, 0.7
    logits = random_logits(m, vs, dtype, gen).requires_grad_(True)
    labels = torch.randint(0, vs, (m,), generator=gen)
    labels[::4] = -100
    ce_weights = torch.rand(m, generator=gen) + 0.5
    rows = torch.tensor([0, 3, 4, 5, 9, 12])
    kd_weights = mixed_weights(len(rows), gen)
    if teacher_kind == "logits":
        teacher = teacher_logits(len(rows), vt, dtype, gen, config.top_k, vt).requires_grad_(True)
        t_leaf = teacher
    else:
        teacher = teacher_head(len(rows), h, vt, dtype, gen, bias=True, top_k=config.top_k)
        teacher = teacher._replace(hidden=teacher.hidden.requires_grad_(True))
        t_leaf = teacher.hidden
    total, ce_tokens, kd_tokens = fused_loss(
        logits, labels, ce_weights, teacher, kd_weights, rows, temperature=tau, chunk_size=chunk_size,
        **config.kwargs(),
    )  # fmt: skip
    total.backward()

    ref_logits = logits.detach().double().requires_grad_(True)
    ref_teacher = t_leaf.detach().double().requires_grad_(True)
    ref_t = ref_teacher
    if teacher_kind == "head":  # the input-dtype logits' values, with the float64 gradient
        exact = F.linear(ref_teacher, teacher.weight.double(), teacher.bias.double())
        in_dtype = F.linear(teacher.hidden.detach(), teacher.weight, teacher.bias).double()
        ref_t = exact + (in_dtype - exact).detach()
    ce_ref = F.cross_entropy(ref_logits, labels, ignore_index=-100, reduction="none")  # [M]
    kd_total_ref, kd_ref = naive_distill(ref_logits, ref_t, kd_weights, rows, config, tau, None)
    total_ref = (ce_weights.double() * ce_ref).sum() + kd_total_ref
    total_ref.backward()
    head_bf16 = teacher_kind == "head" and dtype == BF16  # a chunk's bf16 matmul may round differently
    value_tol = {"rtol": 5e-3, "atol": 1e-4} if head_bf16 else VALUE_TOL
    assert_close(total.double(), total_ref, **value_tol)
    assert_close(ce_tokens.double(), ce_ref.detach(), **VALUE_TOL)
    assert_close(kd_tokens.double(), kd_ref.detach(), **value_tol)
    assert_close(logits.grad.double(), ref_logits.grad, **grad_tol(dtype, ref_logits.grad))
    teacher_tol = grad_tol(dtype, ref_teacher.grad)
    if head_bf16:  # the hidden gradient is a bf16 matmul of bf16-rounded logit gradients
        teacher_tol = {"rtol": 3e-2, "atol": 1e-2 * float(ref_teacher.grad.abs().max())}
    assert_close(t_leaf.grad.double(), ref_teacher.grad, **teacher_tol)


def test_fused_loss_equals_the_two_separate_losses():
    from swift_lingudistill.losses import fused_loss

    gen = torch.Generator().manual_seed(3)
    logits = random_logits(20, 50, torch.float32, gen).requires_grad_(True)
    labels = torch.randint(0, 50, (20,), generator=gen)
    rows = torch.arange(0, 20, 3)
    teacher = random_logits(len(rows), 50, torch.float32, gen)
    ce_w, kd_w = torch.ones(20), torch.full((len(rows),), 0.5)
    total, ce_tokens, kd_tokens = fused_loss(logits, labels, ce_w, teacher, kd_w, rows, chunk_size=4)
    total.backward()
    fused_grad = logits.grad.clone()
    logits.grad = None
    ce, ce_sep = cross_entropy_sum(logits, labels, ce_w)
    kd, kd_sep = distill_sum(logits, teacher, kd_w, rows=rows)
    (ce + kd).backward()
    assert_close(total, ce + kd)
    assert_close(ce_tokens, ce_sep)
    assert_close(kd_tokens, kd_sep)
    assert_close(fused_grad, logits.grad)
    with pytest.raises(ValueError, match="sorted and unique"):
        fused_loss(logits, labels, ce_w, teacher, kd_w, rows.flip(0))


def test_a_second_backward_is_refused_not_wrong():
    """Gradients are scaled in place to spare a full-size copy; a retained graph cannot reuse them silently."""
    from swift_lingudistill.losses import fused_loss

    logits = torch.randn(6, 11, requires_grad=True)
    labels = torch.randint(0, 11, (6,))
    total, _, _ = fused_loss(logits, labels, torch.ones(6), torch.randn(2, 11), torch.ones(2), torch.tensor([1, 4]))
    total.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        total.backward()
