"""``fused_loss`` (CE on every row + distillation on the selected ones, what a training step runs) and
``cross_entropy_sum`` against float64 references; one backward only; no full-size float32 intermediate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from swift_lingudistill.divergences import divergence, resolve_options
from swift_lingudistill.losses import cross_entropy_sum, distill_sum, fused_loss
from tests.support.loss_reference import (
    BF16,
    CONFIGS,
    DTYPES,
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


@pytest.mark.parametrize("chunk_size", [2, 5, 64])
@pytest.mark.parametrize("teacher_kind", ["logits", "head"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
def test_fused_loss_matches_the_naive_reference(config: Config, dtype: torch.dtype, teacher_kind: str, chunk_size: int):
    """CE on every row + w tau^2 D on the selected rows: values, per-row values and gradients (student and
    teacher side) equal a float64 full-vocabulary reference; chunks cut through the selected rows."""
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
    assert_close(kd_tokens.double(), independent_per_token(ref_logits, ref_t, rows, config, tau, None), **value_tol)
    assert_close(logits.grad.double(), ref_logits.grad, **grad_tol(dtype, ref_logits.grad))
    teacher_tol = grad_tol(dtype, ref_teacher.grad)
    if head_bf16:  # the hidden gradient is a bf16 matmul of bf16-rounded logit gradients
        teacher_tol = {"rtol": 3e-2, "atol": 1e-2 * float(ref_teacher.grad.abs().max())}
    assert_close(t_leaf.grad.double(), ref_teacher.grad, **teacher_tol)


def test_fused_loss_equals_the_two_separate_losses():
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
    logits = torch.randn(6, 11, requires_grad=True)
    labels = torch.randint(0, 11, (6,))
    total, _, _ = fused_loss(logits, labels, torch.ones(6), torch.randn(2, 11), torch.ones(2), torch.tensor([1, 4]))
    total.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        total.backward()


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

    def naive() -> None:  # the definition on the whole matrix at once, in float32
        options = resolve_options(**config.kwargs())
        (weights * divergence(student.float(), teacher.float(), options)).sum().backward()

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
