"""The chunked loss's inputs, checked up front so that a wrong shape or value fails before any compute."""

from __future__ import annotations

from numbers import Integral
from typing import Any, NamedTuple

import torch

__all__ = [
    "IGNORE_INDEX",
    "TeacherHead",
    "auto_chunk",
    "check_labels",
    "check_matrix",
    "check_rows",
    "check_weights",
    "resolve_vocab",
    "teacher_parts",
]

IGNORE_INDEX = -100  # label value the cross-entropy skips, as in transformers / ms-swift
_INDEX_DTYPES = (torch.int64, torch.int32)
_CHUNK_ELEMENTS = 1 << 23  # 8M float32 elements: 32 MB per intermediate, ~55 rows at V = 151936


class TeacherHead(NamedTuple):
    """Teacher final hidden states plus its output layer: logits are computed chunk by chunk, never in full."""

    hidden: torch.Tensor  # [N, H]
    weight: torch.Tensor  # [V_t, H]  (lm_head weight)
    bias: torch.Tensor | None = None  # [V_t]


def auto_chunk(chunk_size: int | None, vocab: int) -> int:
    """Rows per chunk: about 8M float32 elements (32 MB) per [c, V] intermediate unless told otherwise."""
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // max(vocab, 1))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, Integral) or int(chunk_size) < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be an int >= 1, e.g. 1024")
    return int(chunk_size)


def resolve_vocab(student_width: int, teacher_width: int, vocab: int | None, top_k: int | None) -> int:
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


def check_matrix(name: str, tensor: Any) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2 or not tensor.is_floating_point():
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{name} must be a 2-D floating-point tensor [rows, vocab], got {shape}")


def check_weights(weights: Any, n: int) -> None:
    if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (n,) or not weights.is_floating_point():
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"weights must be a 1-D float tensor of shape ({n},) (one per row), got {shape}")


def check_labels(labels: Any, m: int, vocab: int) -> None:
    """[M] int labels in [0, vocab) or IGNORE_INDEX, as the logits' rows."""
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (m,) or labels.dtype not in _INDEX_DTYPES:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D int64/int32 tensor of shape ({m},), got {got}")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= vocab))  # [M]
    if bool(bad.any()):
        raise ValueError(
            f"labels must be in [0, {vocab}) or {IGNORE_INDEX} (ignored); found {labels[bad][:5].tolist()}; "
            "check that the labels match the logits' vocabulary"
        )


def check_rows(rows: torch.Tensor | None, m: int) -> int:
    """Validate the row selection and return N, the number of distilled rows (M when ``rows`` is None)."""
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


def teacher_parts(teacher: torch.Tensor | TeacherHead, n: int) -> tuple[torch.Tensor, TeacherHead | None, int]:
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
    check_matrix("teacher logits", teacher)
    if teacher.shape[0] != n:
        raise ValueError(f"teacher logits have {teacher.shape[0]} rows but {n} rows are distilled; they must match")
    return teacher, None, teacher.shape[1]
