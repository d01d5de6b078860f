"""``distill_sum`` (the distillation term alone) against the float64 full-vocabulary references: values (also
against the textbook formulas) and gradients (autograd of the definition), on a grid of shapes, dtypes,
temperatures, divergences and teacher kinds; zero weights and empty selections; argument errors."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from swift_lingudistill.losses import TeacherHead, distill_sum
from tests.support.loss_reference import (
    BF16,
    CONFIGS,
    DTYPES,
    TEMPERATURES,
    VALUE_TOL,
    Config,
    grad_tol,
    independent_per_token,
    mixed_weights,
    naive_distill,
    random_logits,
    teacher_head,
    teacher_logits,
)


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
    assert_close(per_token.double(), independent_per_token(student, teacher, rows, config, temperature, shape.vocab),
                 **VALUE_TOL)  # fmt: skip
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
    with pytest.raises(ValueError, match="rows must be unique"):
        distill_sum(student, teacher[:2], torch.ones(2), rows=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="vocab=11"):
        distill_sum(student, teacher, torch.ones(4), vocab=11)
    with pytest.raises(ValueError, match="top_k=11 exceeds the vocabulary size 10"):
        distill_sum(student, teacher, torch.ones(4), top_k=11)
    with pytest.raises(ValueError, match=r"TeacherHead.hidden must be \[3, H\]"):
        distill_sum(student, TeacherHead(torch.zeros(4, 8), torch.zeros(10, 8)), torch.ones(3), rows=torch.arange(3))
    with pytest.raises(ValueError, match=r"TeacherHead.weight must be \[V_t, 8\]"):
        distill_sum(student, TeacherHead(torch.zeros(4, 8), torch.zeros(10, 7)), torch.ones(4))
