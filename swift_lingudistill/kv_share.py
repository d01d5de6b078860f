"""Layer-wise KV sharing: capture the student's per-layer keys/values, let the teacher's attention read them.

Both sides go through transformers' attention-function registry (``AttentionInterface``), which every
supported model looks up at call time. One router sits over the registered functions and dispatches by
module identity and phase:

- phase ``capture`` (the student's forward): a student attention module's post-RoPE K/V are kept;
- phase ``teacher`` (the teacher's forward): a teacher attention module attends over the student's K/V at
  shared positions plus its own K/V at the positions it owns, as the batch's plan says, one query chunk at a
  time (``teacher_attention``: no [Lq, L + Lq] mask is ever whole);
- any other module or phase (vision tower, gradient-checkpoint recompute in backward) passes through.

The teacher computes only the positions it needs (its own positions and the positions whose logits the
loss reads); the K/V of every other position are the student's. That is the same as running the full
sequence with those K/V replaced (docs/METHOD.md invariant 4), for less compute.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .teacher_attention import attend, mask_block

__all__ = ["ROUTER", "KVRouter", "TeacherPlan", "build_plan", "shared_positions", "teacher_visible"]

_ROUTED_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass
class TeacherPlan:
    """Where the teacher runs for one batch: which rows, which positions, and the attention mask.

    Shapes: B' distilled rows, L sequence length, Lq teacher positions per row (padded).
    """

    rows: torch.Tensor  # [B'] long: batch rows that have distilled tokens
    q_pos: torch.Tensor  # [B', Lq] long: sequence position of each teacher entry (0 for padding entries)
    q_valid: torch.Tensor  # [B', Lq] bool: False for padding entries
    q_own: torch.Tensor  # [B', Lq] bool: the teacher's own K/V are used at this entry
    shared: torch.Tensor  # [B', L] bool: positions whose K/V come from the student
    segment: torch.Tensor  # [B', L] long: sequence id within a packed row (all 0 without packing)
    detach: bool = True
    # Set when the teacher rotates at another base: turns the student's post-RoPE keys into the teacher's
    # (rope_rebase.KeyRotation, [B', Hkv, L, D] -> same).
    key_rotation: Callable[[torch.Tensor], torch.Tensor] | None = None
    _masks: dict[int | None, torch.Tensor] = field(default_factory=dict, repr=False)

    def mask(self, sliding_window: int | None = None) -> torch.Tensor:
        """[B', 1, Lq, L + Lq] bool: query entry -> (student K/V at each position, then teacher entries).

        The whole mask at once: what the dense reference attention uses (``KVRouter.dense_attention``); the
        default path builds it one query chunk at a time (``teacher_attention``).
        """
        if sliding_window not in self._masks:
            n_q, seq_len = self.q_pos.shape[1], self.shared.shape[1]
            self._masks[sliding_window] = mask_block(self, 0, n_q, seq_len, n_q, sliding_window)
        return self._masks[sliding_window]


def shared_positions(scope: str, valid: torch.Tensor, vision: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: positions whose K/V the teacher takes from the student, for a kv_share scope.

    ``valid`` [B, L]: real tokens; ``vision`` [B, L]: positions always shared (vision tokens: the teacher has
    no vision tower; tokens its vocabulary lacks); ``labels`` [B, L] full-length, unshifted: -100 outside the
    response. Scope ``none`` shares nothing (see ``teacher_visible``).
    """
    if scope == "image":
        return vision & valid
    if scope == "prompt":
        return ((labels == -100) | vision) & valid
    if scope == "all":
        return valid.clone()
    if scope == "none":
        return torch.zeros_like(valid)
    raise ValueError(f"unknown kv_share scope {scope!r}: use image, prompt, all or none")


def teacher_visible(scope: str, valid: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: positions the teacher's attention may read at all.

    Every real token, except under scope ``none`` (the blind-teacher ablation): there the ``vision``
    positions are masked out entirely, neither the student's K/V nor the teacher's own computation at them,
    so the teacher conditions on the text alone (at the student's rotary positions).
    """
    return valid & ~vision if scope == "none" else valid


def build_plan(
    logit_mask: torch.Tensor,
    shared: torch.Tensor,
    valid: torch.Tensor,
    segment: torch.Tensor | None = None,
    *,
    compact: bool = True,
    detach: bool = True,
) -> tuple[TeacherPlan, torch.Tensor]:
    """Plan the teacher's forward for the positions whose logits the loss needs.

    ``logit_mask`` [B, L] bool: positions whose teacher logits are needed. Rows without any are skipped.
    ``compact``: run only the positions the result depends on (own positions up to the last needed logit,
    plus the needed logits); otherwise every valid position (the reference the compact plan must equal).
    Returns the plan and ``logit_entries`` [N, 2] long: (plan row, entry index) of each needed logit, in
    row-major position order, so ``hidden[entries[:, 0], entries[:, 1]]`` lines up with ``logit_mask``.
    """
    if segment is None:
        segment = torch.zeros_like(logit_mask, dtype=torch.long)
    rows = logit_mask.any(dim=1).nonzero().flatten()  # [B']
    logit_mask, shared, valid, segment = logit_mask[rows], shared[rows], valid[rows], segment[rows]
    seq_len = logit_mask.shape[1]
    positions = torch.arange(seq_len, device=logit_mask.device)[None].expand_as(logit_mask)
    if compact:
        # Same-segment positions after the last needed logit cannot influence it (causal attention).
        last = torch.where(logit_mask, positions, -1).amax(dim=1, keepdim=True)  # [B', 1]
        keep = (~shared & valid & (positions <= last) & _segments_with(logit_mask, segment)) | logit_mask
    else:
        keep = valid | logit_mask
    counts = keep.sum(dim=1)  # [B']
    n_q = int(counts.max()) if len(rows) else 0
    # Entries in position order: sort keys put kept positions first, in order.
    order = torch.argsort((~keep).to(torch.int64) * (seq_len + 1) + positions, dim=1, stable=True)
    q_pos = order[:, :n_q]  # [B', Lq]
    q_valid = torch.arange(n_q, device=keep.device)[None] < counts[:, None]  # [B', Lq]
    q_pos = torch.where(q_valid, q_pos, torch.zeros_like(q_pos))
    q_own = q_valid & ~shared.gather(1, q_pos)
    plan = TeacherPlan(
        rows=rows, q_pos=q_pos, q_valid=q_valid, q_own=q_own, shared=shared, segment=segment, detach=detach
    )
    entry_is_logit = q_valid & logit_mask.gather(1, q_pos)  # [B', Lq]
    return plan, entry_is_logit.nonzero()


def _segments_with(mask: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: positions whose segment (packed sequence) contains at least one True of ``mask``."""
    n_seg = int(segment.max()) + 1 if segment.numel() else 1
    hit = torch.zeros(mask.shape[0], n_seg, dtype=torch.bool, device=mask.device)  # [B, segments]
    row = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(segment)  # [B, L]
    hit[row[mask], segment[mask]] = True
    return hit.gather(1, segment)


def _module_eager(module: nn.Module) -> Callable:
    """The eager attention function of a module's own modeling file (models define their own)."""
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        raise RuntimeError(
            f"{type(module).__name__} uses eager attention but its module has no eager_attention_forward"
        )
    return fn


class KVRouter:
    """The one dispatcher installed over transformers' attention functions (a process-wide registry)."""

    def __init__(self) -> None:
        self._student: dict[int, int] = {}  # id(attention module) -> layer index
        self._teacher: dict[int, int] = {}
        self.phase: str | None = None
        self.captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> ([B, Hkv, L, D], same)
        self.plan: TeacherPlan | None = None
        self.teacher_layers_run: set[int] = set()
        self.dense_attention = False  # True: one SDPA call with the whole mask (the reference for tests, benchmarks)
        self._installed: dict[str, Callable | None] = {}

    # --- setup -------------------------------------------------------------------------------------
    def install(self) -> None:
        """Wrap the registered attention functions (idempotent); eager is routed too."""
        from transformers.modeling_utils import AttentionInterface

        mapping = AttentionInterface._global_mapping
        for name in _ROUTED_IMPLEMENTATIONS:
            if name in self._installed:
                continue
            original = mapping.get(name)
            if name != "eager" and original is None:
                continue
            self._installed[name] = original
            AttentionInterface.register(name, self._wrap(original))

    def bind(self, student: Iterable[nn.Module], teacher: Iterable[nn.Module]) -> None:
        """Declare which attention modules are the student's and the teacher's (in layer order)."""
        self.install()
        self._student = {id(m): i for i, m in enumerate(student)}
        self._teacher = {id(m): i for i, m in enumerate(teacher)}
        self.reset()

    @property
    def num_student_layers(self) -> int:
        return len(self._student)

    @property
    def num_teacher_layers(self) -> int:
        return len(self._teacher)

    def reset(self) -> None:
        self.phase = None
        self.captured = {}
        self.plan = None
        self.teacher_layers_run = set()

    # --- phases ------------------------------------------------------------------------------------
    def start_capture(self) -> None:
        """The student's next forward leaves its per-layer post-RoPE K/V in ``captured``."""
        self.captured = {}
        self.phase = "capture"

    def finish_capture(self) -> None:
        """End the capture (before backward's checkpoint recompute) and check every layer was seen."""
        self.phase = None
        if len(self.captured) != self.num_student_layers:
            missing = sorted(set(range(self.num_student_layers)) - set(self.captured))
            raise RuntimeError(
                f"LinguDistill captured K/V from {len(self.captured)} of {self.num_student_layers} student layers "
                f"(missing {missing[:5]}): their attention does not go through transformers' AttentionInterface. "
                "Fix: use --attn_impl sdpa, eager or flash_attn."
            )

    @contextmanager
    def teaching(self, plan: TeacherPlan) -> Iterator[None]:
        """The teacher's forward inside this block attends over the captured K/V as ``plan`` says."""
        self.plan, self.phase, self.teacher_layers_run = plan, "teacher", set()
        try:
            yield
        finally:
            self.phase, self.plan = None, None
        if self.teacher_layers_run != set(range(self.num_teacher_layers)):
            missing = sorted(set(range(self.num_teacher_layers)) - self.teacher_layers_run)
            raise RuntimeError(
                f"KV sharing did not reach teacher layers {missing[:5]}: their attention bypassed "
                "transformers' AttentionInterface (a model-local attention override?), so the teacher "
                "would not see the image"
            )

    # --- the routed function -----------------------------------------------------------------------
    def _wrap(self, original: Callable | None) -> Callable:
        def routed_attention(module, query, key, value, attention_mask, **kwargs):
            if self.phase == "teacher" and id(module) in self._teacher:
                return self._teacher_attention(module, query, key, value, kwargs)
            if self.phase == "capture" and id(module) in self._student:
                self.captured[self._student[id(module)]] = (key, value)
            fn = original if original is not None else _module_eager(module)
            return fn(module, query, key, value, attention_mask, **kwargs)

        routed_attention.__lingudistill_router__ = True
        return routed_attention

    def _teacher_attention(self, module, query, key, value, kwargs):
        """Teacher queries [B', H, Lq, D] over (student K/V [B', Hkv, L, D] ++ own K/V [B', Hkv, Lq, D])."""
        layer = self._teacher[id(module)]
        plan = self.plan
        student_k, student_v = self.captured[layer]
        student_k = student_k.index_select(0, plan.rows).to(query.dtype)  # [B', Hkv, L, D]
        student_v = student_v.index_select(0, plan.rows).to(query.dtype)
        if plan.detach:
            student_k, student_v = student_k.detach(), student_v.detach()
        if plan.key_rotation is not None:  # values carry no rotation
            student_k = plan.key_rotation(student_k)
        if kwargs.get("softcap") is not None:
            raise NotImplementedError("attention logit soft-capping is not supported by LinguDistill's teacher")
        out = attend(
            query,
            (student_k, student_v),
            (key, value),
            plan,
            sliding_window=kwargs.get("sliding_window"),
            scale=kwargs.get("scaling"),
            dense=self.dense_attention,
        )  # [B', H, Lq, D]
        self.teacher_layers_run.add(layer)
        return out.transpose(1, 2).contiguous(), None


# transformers' attention registry is process-wide, so is its router.
ROUTER = KVRouter()
