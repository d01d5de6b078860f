"""The fused-linear path (``StudentHead``: hidden states + output layer, no [M, V] tensor) against the logits path it
replaces (``F.linear`` then the chunked loss, autograd through the matmul) and a float64 reference: values, the
argmax, and the gradients w.r.t. the hidden states, the output weight and its bias, for every divergence, top-k,
temperature and dtype; distillation alone; frozen heads; tied embeddings; no full-size tensor in any dtype."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from swift_lingudistill.losses import StudentHead, TeacherHead, cross_entropy_sum, distill_sum, fused_loss
from tests.support.loss_reference import (
    BF16,
    CONFIGS,
    DTYPES,
    TEMPERATURES,
    VALUE_TOL,
    Config,
    independent_per_token,
    mixed_weights,
    naive_distill,
    teacher_head,
)
from tests.unit.losses.test_fused_loss import _run_recorded


def student_inputs(m: int, h: int, v: int, dtype: torch.dtype, gen: torch.Generator, bias: bool):
    """Leaves that require grad: hidden [m, h], weight [v, h], bias [v]; logits of a few units, as in training."""
    hidden = torch.randn(m, h, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=gen) * (2.0 / math.sqrt(h))).to(dtype).requires_grad_()
    b = (0.3 * torch.randn(v, generator=gen)).to(dtype).requires_grad_() if bias else None
    return hidden, weight, b


def _grads(tensors):
    return [None if t is None else t.grad for t in tensors]


def _tol(dtype: torch.dtype, ref: torch.Tensor) -> dict[str, float]:
    """The two paths round the same numbers: float32 to a few ulps; bf16 one bf16 ulp of the largest entry (the
    logits' gradient is rounded to bf16 on both paths, the weight's gradient summed in float32 on the fused one)."""
    scale = float(ref.abs().max()) if ref.numel() else 1.0
    if dtype == torch.float32:
        return {"rtol": 1e-5, "atol": 2e-5 * scale}
    return {"rtol": 2e-2, "atol": 8e-3 * scale}


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
def test_fused_linear_equals_the_logits_path(config: Config, dtype: torch.dtype, temperature: float, bias: bool):
    """CE + distillation from hidden states equals F.linear + the logits path, values and every gradient."""
    gen = torch.Generator().manual_seed(21)
    m, h, vs, vt = 13, 9, 131, 127
    hidden, weight, b = student_inputs(m, h, vs, dtype, gen, bias)
    labels = torch.randint(0, vs, (m,), generator=gen)
    labels[::4] = -100
    ce_weights = torch.rand(m, generator=gen) + 0.5
    rows = torch.tensor([0, 3, 4, 5, 9, 12])
    kd_weights = mixed_weights(len(rows), gen)
    teacher = teacher_head(len(rows), h, vt, dtype, gen, bias=True, top_k=config.top_k)
    options = {"temperature": temperature, "chunk_size": 5, **config.kwargs()}

    fused = fused_loss(StudentHead(hidden, weight, b), labels, ce_weights, teacher, kd_weights, rows,
                       return_argmax=True, **options)  # fmt: skip
    (2.0 * fused[0]).backward()  # a non-unit outer gradient: backward scales the stored gradients
    got = _grads((hidden, weight, b))
    for t in (hidden, weight, b):
        if t is not None:
            t.grad = None

    logits = F.linear(hidden, weight, b)  # [m, vs] in the inputs' dtype, autograd through the matmul
    ref = fused_loss(logits, labels, ce_weights, teacher, kd_weights, rows, return_argmax=True, **options)
    (2.0 * ref[0]).backward()
    want = _grads((hidden, weight, b))

    value_tol = VALUE_TOL if dtype == torch.float32 else {"rtol": 5e-3, "atol": 1e-4}
    for a, c in zip(fused[:3], ref[:3], strict=True):
        assert_close(a, c, **value_tol)
    assert torch.equal(fused[3], logits.detach().argmax(-1)) or dtype == BF16  # bf16 ties may break either way
    assert (fused[3] == logits.detach().argmax(-1)).float().mean() >= 0.9
    for a, c in zip(got, want, strict=True):
        if c is None:
            assert a is None
            continue
        assert a.dtype == c.dtype == dtype
        assert_close(a, c, **_tol(dtype, c))


@pytest.mark.parametrize("config", CONFIGS)
def test_fused_linear_against_the_float64_definition(config: Config):
    """Independent of the logits path: values against the textbook formulas and gradients against autograd of
    the definition in float64, through the output layer."""
    gen = torch.Generator().manual_seed(5)
    m, h, v, tau = 11, 7, 101, 0.7
    hidden, weight, b = student_inputs(m, h, v, torch.float32, gen, bias=True)
    labels = torch.randint(0, v, (m,), generator=gen)
    labels[1::3] = -100
    rows = torch.tensor([1, 2, 6, 7, 10])
    kd_weights = mixed_weights(len(rows), gen)
    teacher = teacher_head(len(rows), h, v, torch.float32, gen, bias=False, top_k=config.top_k)
    total, ce, kd = fused_loss(StudentHead(hidden, weight, b), labels, torch.ones(m), teacher, kd_weights, rows,
                               temperature=tau, chunk_size=4, **config.kwargs())  # fmt: skip
    total.backward()

    leaves = [t.detach().double().requires_grad_() for t in (hidden, weight, b)]
    logits64 = F.linear(*leaves)
    t64 = F.linear(teacher.hidden.double(), teacher.weight.double())
    ce_ref = F.cross_entropy(logits64, labels, ignore_index=-100, reduction="none")
    kd_total, _ = naive_distill(logits64, t64, kd_weights, rows, config, tau, None)
    (ce_ref.sum() + kd_total).backward()
    assert_close(total.double(), ce_ref.sum() + kd_total, **VALUE_TOL)
    assert_close(ce.double(), ce_ref.detach(), **VALUE_TOL)
    assert_close(kd.double(), independent_per_token(logits64, t64, rows, config, tau, None), **VALUE_TOL)
    for leaf, ref in zip((hidden, weight, b), leaves, strict=True):
        assert_close(leaf.grad.double(), ref.grad, rtol=1e-5, atol=3e-5 * float(ref.grad.abs().max()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_distillation_alone_and_cross_entropy_alone(dtype: torch.dtype):
    """distill_sum with rows in any order (unvisited rows get exact zeros) and cross_entropy_sum from hidden states."""
    gen = torch.Generator().manual_seed(8)
    m, h, v = 17, 6, 97
    hidden, weight, _ = student_inputs(m, h, v, dtype, gen, bias=False)
    rows = torch.tensor([9, 2, 14, 5])
    teacher = teacher_head(len(rows), h, v, dtype, gen, bias=False, top_k=None)
    weights = torch.tensor([1.0, 0.5, 0.0, 2.0])
    total, per_token = distill_sum(StudentHead(hidden, weight), teacher, weights, rows=rows, chunk_size=3)
    total.backward()
    got = (hidden.grad, weight.grad)
    hidden.grad = weight.grad = None
    ref_total, ref_tokens = distill_sum(F.linear(hidden, weight), teacher, weights, rows=rows, chunk_size=3)
    ref_total.backward()
    assert_close(total, ref_total, **VALUE_TOL if dtype == torch.float32 else {"rtol": 5e-3, "atol": 1e-4})
    assert_close(per_token, ref_tokens, **VALUE_TOL if dtype == torch.float32 else {"rtol": 5e-3, "atol": 1e-4})
    assert_close(got[0], hidden.grad, **_tol(dtype, hidden.grad))
    assert_close(got[1], weight.grad, **_tol(dtype, weight.grad))
    untouched = torch.ones(m, dtype=torch.bool)
    untouched[rows[weights > 0]] = False
    assert not got[0][untouched].any(), "rows that are not distilled (or weigh 0) get exactly zero gradient"

    labels = torch.randint(0, v, (m,), generator=gen)
    labels[::2] = -100
    hidden.grad = weight.grad = None
    total, ce, argmax = cross_entropy_sum(StudentHead(hidden, weight), labels, torch.ones(m), return_argmax=True)
    total.backward()
    logits = F.linear(hidden, weight)
    want = F.cross_entropy(logits.double(), labels, ignore_index=-100, reduction="none")
    assert_close(ce.double(), want.detach(), **VALUE_TOL if dtype == torch.float32 else {"rtol": 5e-3, "atol": 1e-3})
    assert torch.equal(argmax, logits.detach().argmax(-1)) or dtype == BF16


def test_frozen_head_gets_no_gradient_and_tied_embeddings_get_both():
    """A frozen output layer (LoRA) receives nothing; a weight shared with the embedding (tied) receives the
    embedding's gradient plus the output layer's, as through F.linear."""
    gen = torch.Generator().manual_seed(4)
    v, h, m = 53, 8, 10
    table = torch.randn(v, h, generator=gen).requires_grad_()
    ids = torch.randint(0, v, (m,), generator=gen)
    labels = torch.randint(0, v, (m,), generator=gen)
    grads = []
    for fused in (True, False):
        table.grad = None
        hidden = torch.tanh(F.embedding(ids, table))  # [m, h]: the embedding's use of the shared weight
        student = StudentHead(hidden, table) if fused else F.linear(hidden, table)
        total, _ = cross_entropy_sum(student, labels, torch.ones(m), chunk_size=3)
        total.backward()
        grads.append(table.grad.clone())
    assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)

    frozen = table.detach()
    hidden = torch.randn(m, h, generator=gen).requires_grad_()
    total, _ = cross_entropy_sum(StudentHead(hidden, frozen), labels, torch.ones(m))
    total.backward()
    assert hidden.grad is not None and frozen.grad is None


def test_no_tokens_by_vocab_tensor_in_any_dtype():
    """The fused-linear path creates and saves nothing of [M, V] size (in any dtype); the logits path does."""
    gen = torch.Generator().manual_seed(12)
    m, h, v, chunk = 64, 16, 20000, 8
    hidden, weight, _ = student_inputs(m, h, v, BF16, gen, bias=False)
    rows = torch.arange(0, m, 2)
    teacher = TeacherHead(torch.randn(len(rows), h, generator=gen).to(BF16), weight.detach().clone())
    labels = torch.randint(0, v, (m,), generator=gen)

    def run(student) -> None:
        total, _, _ = fused_loss(student, labels, torch.ones(m), teacher, torch.ones(len(rows)), rows,
                                 chunk_size=chunk)  # fmt: skip
        total.backward()

    def large(records) -> list:
        return [shape for _, shape in records if math.prod(shape) >= m * v // 2]

    saved, seen = _run_recorded(lambda: run(StudentHead(hidden, weight)))
    assert seen and not large(saved) and not large(seen), large(seen)[:3]
    assert hidden.grad.dtype == BF16 and weight.grad.dtype == BF16
    saved, seen = _run_recorded(lambda: run(F.linear(hidden, weight)))
    assert large(saved) and large(seen), "the recorders must catch the logits path's [M, V] tensors"


def test_bad_student_head_is_refused():
    with pytest.raises(ValueError, match=r"StudentHead\.weight must be"):
        cross_entropy_sum(StudentHead(torch.zeros(2, 3), torch.zeros(5, 4)), torch.zeros(2, dtype=torch.long),
                          torch.ones(2))  # fmt: skip
    with pytest.raises(ValueError, match=r"StudentHead\.bias"):
        cross_entropy_sum(StudentHead(torch.zeros(2, 3), torch.zeros(5, 3), torch.zeros(4)),
                          torch.zeros(2, dtype=torch.long), torch.ones(2))  # fmt: skip
    with pytest.raises(ValueError, match="labels must be in"):
        cross_entropy_sum(StudentHead(torch.zeros(2, 3), torch.zeros(5, 3)), torch.tensor([0, 5]), torch.ones(2))
