"""Rotary re-basing: a teacher at another rotary base reads the student's shared keys, exactly.

A post-RoPE key is the pre-RoPE key turned, in each frequency's 2-D plane, by the angle ``position * inv_freq``
(times a constant ``attention_scaling`` for some scalings). Rotations are orthogonal, so a key the student turned
at its own frequencies can be turned back and turned again at the teacher's frequencies, at the same positions:

    k_teacher = s_t * R(p * f_t) . R(p * f_s)^-1 . k_student / s_s

Every relative position the teacher's queries then see is encoded the teacher's way. For M-RoPE students
(Qwen2-VL's sectioned and Qwen3-VL's interleaved layouts) ``p`` is per frequency: each frequency takes the
temporal, height or width component of the token's 3-D position. Values carry no rotation and are left alone.

Plain torch; the decision of when re-basing is exact works on the numbers read from the two text configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "STATIC_ROPE_TYPES",
    "KeyRotation",
    "RotaryInfo",
    "RotaryPlan",
    "RotaryRebase",
    "frequency_positions",
    "interleaved_components",
    "reconcile_rotary",
    "sectioned_components",
]

# Rope types whose angle is position * a fixed inverse frequency (and whose cos/sin carry a constant scale):
# re-basing between any two of them is exact. "dynamic" and "longrope" change their frequencies with the length.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


@dataclass(frozen=True)
class RotaryInfo:
    """What a text model's rotary embedding depends on, read from its config."""

    base: float
    kind: str  # transformers' rope_type: default, linear, llama3, yarn, dynamic, longrope, ...
    factor: float | None
    max_positions: int | None  # max_position_embeddings: dynamic NTK leaves positions below it untouched

    @classmethod
    def from_config(cls, text_config: Any) -> RotaryInfo | None:
        """None when the config has no single rotary base (e.g. Gemma 3's one base per layer type)."""
        params = getattr(text_config, "rope_parameters", None)
        if not isinstance(params, dict):
            params = getattr(text_config, "rope_scaling", None) or {}
        if params and all(isinstance(p, dict) for p in params.values()):
            return None  # per-layer-type rotary embeddings
        base = params.get("rope_theta", getattr(text_config, "rope_theta", None))
        if base is None:
            return None
        kind = params.get("rope_type", params.get("type", "default")) or "default"
        kind = "default" if kind == "mrope" else kind  # M-RoPE's sections are positions, not frequencies
        factor = params.get("factor")
        return cls(
            base=float(base),
            kind=str(kind),
            factor=None if factor is None else float(factor),
            max_positions=getattr(text_config, "max_position_embeddings", None),
        )

    def effective(self, max_length: int | None) -> RotaryInfo:
        """The same rotations under a plainer name: dynamic NTK below its threshold is the default RoPE.

        transformers grows dynamic NTK frequencies only once a position reaches ``max_position_embeddings``
        (``dynamic_rope_update``); below that, and at its initial state, they are the default frequencies exactly.
        """
        if self.kind == "dynamic" and _fits(max_length, self.max_positions):
            return RotaryInfo(self.base, "default", None, self.max_positions)
        return self

    def describe(self) -> str:
        if self.kind == "default":
            return f"base {self.base:g}"
        factor = f" x{self.factor:g}" if self.factor is not None else ""
        return f"base {self.base:g}, {self.kind}{factor}"


def _fits(max_length: int | None, max_positions: int | None) -> bool:
    return max_length is not None and max_positions is not None and int(max_length) <= int(max_positions)


@dataclass(frozen=True)
class RotaryPlan:
    """The outcome of comparing two rotary embeddings: same rotations, re-base the keys, or refuse (with why)."""

    rebase: bool = False
    note: str | None = None  # what was decided, for the log
    refusal: str | None = None  # why the pair cannot be reconciled exactly


def reconcile_rotary(
    student: RotaryInfo | None,
    teacher: RotaryInfo | None,
    *,
    rebase_enabled: bool,
    max_length: int | None,
) -> RotaryPlan:
    """Decide how the teacher can read the student's post-RoPE keys exactly (called when the lineage's rotary rows
    differ and everything else matches). ``max_length``: the longest sequence swift will train on."""
    if student is None or teacher is None:
        return RotaryPlan(refusal="the rotary embedding of one side is not a single base LinguDistill can re-base")
    s, t = student.effective(max_length), teacher.effective(max_length)
    if s == t:
        note = (
            f"the student's rotary embedding ({student.describe()}) and the teacher's ({teacher.describe()}) rotate "
            f"identically up to --max_length {max_length}: dynamic NTK scaling changes nothing below "
            f"max_position_embeddings ({max(x.max_positions or 0 for x in (student, teacher))})"
        )
        return RotaryPlan(note=note)
    for side, info in (("student", s), ("teacher", t)):
        if info.kind not in STATIC_ROPE_TYPES:
            if info.kind == "dynamic":
                why = (
                    f"the {side}'s dynamic NTK scaling (x{info.factor:g}) changes its rotary frequencies once a "
                    f"position reaches max_position_embeddings ({info.max_positions}), and --max_length is "
                    f"{max_length}; beyond that the two models rotate differently at lengths only known per batch. "
                    f"Fix: set --max_length {info.max_positions} or less"
                )
            else:
                why = (
                    f"the {side}'s rope scaling {info.kind!r} changes its frequencies with the sequence length, so the "
                    "keys cannot be re-based exactly. Fix: use a teacher with the student's rotary settings, or "
                    "`model: self`"
                )
            return RotaryPlan(refusal=why)
    if not rebase_enabled:
        return RotaryPlan(
            refusal=f"the student rotates at {s.describe()} and the teacher at {t.describe()}; re-basing the shared "
            "keys would reconcile them exactly, but kv_share.rebase_rotary is false. Fix: remove "
            "`rebase_rotary: false` from kv_share (or use a teacher at the student's rotary base, or `model: self`)"
        )
    note = (
        f"the teacher's rotary embedding ({t.describe()}) differs from the student's ({s.describe()}): the shared "
        "keys are re-based exactly (turned back at the student's frequencies and forward at the teacher's, at the "
        "same positions); set kv_share.rebase_rotary: false to refuse such a teacher instead"
    )
    return RotaryPlan(rebase=True, note=note)


# --- which position each frequency turns by ----------------------------------------------------------------


def sectioned_components(section: list[int], n_freq: int) -> torch.Tensor:
    """[F] long: Qwen2-VL / Qwen2.5-VL M-RoPE: the first section[0] frequencies follow the temporal position,
    the next section[1] the height, the rest the width."""
    if sum(section) != n_freq:
        raise ValueError(f"mrope_section {section} does not cover the {n_freq} rotary frequencies")
    return torch.cat([torch.full((n,), i % 3, dtype=torch.long) for i, n in enumerate(section)])


def interleaved_components(section: list[int], n_freq: int) -> torch.Tensor:
    """[F] long: Qwen3-VL interleaved M-RoPE: frequency j follows height when j % 3 == 1 and j < 3 * section[1],
    width when j % 3 == 2 and j < 3 * section[2], the temporal position otherwise."""
    index = torch.arange(n_freq)
    components = torch.zeros(n_freq, dtype=torch.long)
    components[(index % 3 == 1) & (index < 3 * section[1])] = 1
    components[(index % 3 == 2) & (index < 3 * section[2])] = 2
    return components


def frequency_positions(positions: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """[B, L, F] long: the position each rotary frequency of each token turned by.

    ``positions``: [B, L] (1-D RoPE) or [C, B, L] (M-RoPE components); ``components`` [F] long: the component
    each frequency follows (all 0 for 1-D RoPE).
    """
    if positions.dim() == 2:
        positions = positions[None]  # [1, B, L]
    return positions.permute(1, 2, 0)[..., components.to(positions.device)]  # [B, L, F]


# --- the rotation ------------------------------------------------------------------------------------------


def _rotary_of(decoder: nn.Module) -> nn.Module:
    rotary = getattr(decoder, "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq"):
        raise ValueError(f"{type(decoder).__name__} has no single rotary embedding (rotary_emb.inv_freq) to re-base")
    return rotary


class RotaryRebase:
    """The student's and the teacher's rotary frequencies, and the rotation between them at given positions."""

    def __init__(
        self,
        student_inv_freq: torch.Tensor,
        teacher_inv_freq: torch.Tensor,
        student_scaling: float = 1.0,
        teacher_scaling: float = 1.0,
    ) -> None:
        if student_inv_freq.shape != teacher_inv_freq.shape:
            raise ValueError(
                f"rotary frequencies differ in number: student {tuple(student_inv_freq.shape)}, "
                f"teacher {tuple(teacher_inv_freq.shape)}"
            )
        self.student_inv_freq = student_inv_freq.detach().float().cpu()  # [F]
        self.teacher_inv_freq = teacher_inv_freq.detach().float().cpu()  # [F]
        self.student_scaling = float(student_scaling)
        self.teacher_scaling = float(teacher_scaling)

    @classmethod
    def between(cls, student_decoder: nn.Module, teacher_decoder: nn.Module) -> RotaryRebase:
        """From the two decoders' live rotary embeddings (the frequencies the models really use)."""
        return cls.from_rotary(_rotary_of(student_decoder), _rotary_of(teacher_decoder))

    @classmethod
    def from_rotary(cls, student: nn.Module, teacher: nn.Module) -> RotaryRebase:
        """From two transformers rotary-embedding modules (``inv_freq`` and ``attention_scaling``)."""
        return cls(
            student.inv_freq,
            teacher.inv_freq,
            getattr(student, "attention_scaling", 1.0),
            getattr(teacher, "attention_scaling", 1.0),
        )

    @property
    def frequencies(self) -> int:
        return int(self.student_inv_freq.numel())

    def key_rotation(self, positions: torch.Tensor) -> KeyRotation:
        """The rotation for keys at ``positions`` [B', L, F] (per-frequency positions, see ``frequency_positions``)."""
        device = positions.device
        p = positions.float()  # [B', L, F]; the products below round as transformers' rotary embeddings round
        student = p * self.student_inv_freq.to(device)  # [B', L, F]
        teacher = p * self.teacher_inv_freq.to(device)
        return KeyRotation(
            cos_s=_doubled(student.cos() * self.student_scaling),
            sin_s=_doubled(student.sin() * self.student_scaling),
            cos_t=_doubled(teacher.cos() * self.teacher_scaling),
            sin_t=_doubled(teacher.sin() * self.teacher_scaling),
        )


def _doubled(x: torch.Tensor) -> torch.Tensor:
    """[B, L, F] -> [B, 1, L, 2F]: transformers' layout (each frequency's pair is (j, j + F)), one head axis."""
    return torch.cat([x, x], dim=-1)[:, None]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@dataclass
class KeyRotation:
    """Turns keys post-RoPE'd at the student's frequencies into keys post-RoPE'd at the teacher's (one batch)."""

    cos_s: torch.Tensor  # [B', 1, L, R] with R = 2F rotary dims; the student's cos * scaling
    sin_s: torch.Tensor
    cos_t: torch.Tensor  # the teacher's
    sin_t: torch.Tensor

    def __post_init__(self) -> None:
        # The student's scaling^2 (1 without attention scaling, up to rounding): once per batch, not per layer.
        self._scale = self.cos_s.square() + self.sin_s.square()

    def __call__(self, keys: torch.Tensor) -> torch.Tensor:
        """[B', Hkv, L, D] -> same shape and dtype; computed in float32."""
        rot = self.cos_s.shape[-1]
        k = keys.float()
        k_rot, k_pass = k[..., :rot], k[..., rot:]  # partial rotary: only the first R dims turn
        # Inverse of y = k*cos + rotate_half(k)*sin (a scaled rotation): k = (y*cos - rotate_half(y)*sin) / scale
        pre = (k_rot * self.cos_s - _rotate_half(k_rot) * self.sin_s) / self._scale
        turned = pre * self.cos_t + _rotate_half(pre) * self.sin_t
        return torch.cat([turned, k_pass], dim=-1).to(keys.dtype)
