"""One training step's LinguDistill loss, from a batch and the student's output (plain torch + transformers).

The student's output is its logits or, on the fused-linear path, its final hidden states and output layer
(``StudentHead``), from which the loss makes each chunk's logits itself: then no [tokens x vocab] tensor exists.

Data flow: batch -> per-token weights (tags) -> student forward with K/V captured (kv_share) -> teacher
forward over shared K/V on the distilled rows only (teacher) -> chunked CE + distillation (losses).
One step: ``start_step`` (before the student's forward), ``loss`` (after it), ``end_step`` (before backward).
Nothing here imports ms-swift; ``integration.trainer`` feeds it swift's batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import LinguDistillConfig
from .families import FamilyAdapter, unwrap_model
from .kv_share import ROUTER, KVRouter, build_plan, shared_positions, teacher_visible
from .losses import IGNORE_INDEX, StudentHead, TeacherHead, cross_entropy_sum, fused_loss
from .rope_rebase import RotaryRebase
from .teacher import TeacherRunner

__all__ = ["BatchContext", "Distiller", "StepStats", "TeacherOutOfMemoryError", "kept_positions"]


@dataclass
class BatchContext:
    """What the loss needs from the batch beyond the logits swift hands it. Shapes: B rows, L tokens."""

    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L] full length, unshifted (-100 outside the response)
    valid: torch.Tensor  # [B, L] bool: real tokens (attention_mask)
    token_weight: torch.Tensor  # [B, L] float: distillation weight of the sample each token belongs to
    sample_weight: torch.Tensor  # [S] float: one weight per original sample (S = B without packing)
    segment: torch.Tensor | None = None  # [B, L] long: packed-sequence id (padding-free batches)
    logits_to_keep: Any = None  # swift's: int suffix length, or [L] bool mask (batch of one); None = all
    # Read by the teacher only; a batch that distils nothing may leave them unset.
    rotary: torch.Tensor | None = None  # [B, L] long: the student's rotary position of each token
    vision: torch.Tensor | None = None  # [B, L] bool: vision-token positions
    # Read only when the teacher re-bases the shared keys (a teacher at another rotary base).
    rotary_frequency: torch.Tensor | None = None  # [B, L, F] long: per-frequency rotary positions (M-RoPE: 3-D)

    @property
    def any_distilled(self) -> bool:
        return bool((self.sample_weight > 0).any())


@dataclass
class StepStats:
    """Per-token and per-sample values for swift's metrics (detached)."""

    ce: torch.Tensor  # [n_supervised] float32
    kd: torch.Tensor  # [n_distilled_tokens] float32: tau^2 * D
    distilled: torch.Tensor  # [S] float32: 1.0 for samples with w > 0
    teacher_ran: bool = False
    kd_skipped: bool = False  # the teacher gave non-finite values: this batch got CE only
    argmax: torch.Tensor | None = None  # [B, K] long: the student's prediction at each kept position (fused path)


def kept_positions(logits_to_keep: Any, seq_len: int, device: torch.device) -> torch.Tensor:
    """[K] long: the sequence positions of the logits the student returned (swift's ``logits_to_keep``)."""
    if logits_to_keep is None or (isinstance(logits_to_keep, int) and logits_to_keep == 0):
        return torch.arange(seq_len, device=device)
    if isinstance(logits_to_keep, int):
        return torch.arange(seq_len - logits_to_keep, seq_len, device=device)
    keep = logits_to_keep.to(device)
    if keep.dtype == torch.bool:
        return keep.nonzero().flatten()
    return keep.long()


class Distiller:
    """Computes ``(CE + lambda * sum w * tau^2 * D) / N`` for one batch; runs the teacher only when needed."""

    def __init__(
        self,
        config: LinguDistillConfig,
        family: FamilyAdapter,
        teacher: TeacherRunner,
        *,
        shared_vocab: int,
        student_attention: list[nn.Module],
        router: KVRouter = ROUTER,
        compact: bool = True,
        chunk_size: int | None = None,
        rebase: RotaryRebase | None = None,
    ) -> None:
        self.config = config
        self.family = family
        self.teacher = teacher
        self.shared_vocab = shared_vocab
        self.router = router
        self.compact = compact
        self.chunk_size = chunk_size
        self.rebase = rebase  # the teacher rotates at another base: its shared keys are re-based (rope_rebase)
        self.teacher_forwards = 0  # counted for the "no distilled sample, no teacher forward" invariant
        self._head_finite: bool | None = None
        router.bind(student_attention, teacher.attention_modules(family))

    def will_distill(self, ctx: BatchContext) -> bool:
        """Whether this batch needs the teacher (and so the student's K/V)."""
        return ctx.any_distilled and self.config.loss.lambda_ > 0

    # --- one step's K/V capture ------------------------------------------------------------------------
    def start_step(self, ctx: BatchContext, batch: dict[str, Any], model: nn.Module) -> None:
        """Before the student's forward: check the batch; when it distils, fill the positions the teacher
        reads (``ctx.rotary``, ``ctx.vision``, and ``ctx.rotary_frequency`` when it re-bases) and capture the
        student's K/V during that forward."""
        self.family.check_batch(batch, model)
        if not self.will_distill(ctx):  # a batch that distils nothing skips the rotary and vision scan
            return
        ctx.rotary = self.family.rotary_positions(batch, model)
        ctx.vision = self.family.vision_mask(ctx.input_ids, unwrap_model(model).config)
        if self.rebase is not None:  # per-frequency (M-RoPE: 3-D) positions for the re-based keys
            ctx.rotary_frequency = self.family.frequency_positions(batch, model, self.rebase.frequencies)
        self.router.start_capture()

    def finish_capture(self) -> None:
        """After the student's forward (the loss calls it): every layer's K/V must have been seen."""
        if self.router.phase == "capture":
            self.router.finish_capture()

    def end_step(self) -> None:
        """Drop the captured K/V (before backward, whose checkpoint recompute must not capture again)."""
        self.router.reset()

    def text_teacher_hidden(self, batch: dict[str, Any], model: nn.Module) -> torch.Tensor:
        """[B, L, H] the teacher's plain forward on a text-only batch, at the student's rotary positions."""
        positions = self.family.rotary_positions(batch, model)  # [B, L]
        return self.teacher.text_hidden_states(batch["input_ids"], positions, batch.get("attention_mask"))

    def teacher_hidden(self, ctx: BatchContext, logit_mask: torch.Tensor) -> torch.Tensor:
        """[N, H] teacher final hidden states at the positions of ``logit_mask`` [B, L], row-major order."""
        if ctx.rotary is None or ctx.vision is None:
            raise RuntimeError("the teacher needs the batch's rotary positions and vision mask (BatchContext)")
        # Tokens the teacher's vocabulary lacks (image placeholders, tile markers) are never the teacher's own.
        always = ctx.vision | (ctx.input_ids >= self.teacher.vocab_rows)
        scope = self.config.kv_share.scope
        shared = shared_positions(scope, ctx.valid, always, ctx.labels)
        visible = teacher_visible(scope, ctx.valid, always)  # scope none: the vision positions are masked out
        detach = self.config.kv_share.detach
        plan, entries = build_plan(logit_mask, shared, visible, ctx.segment, compact=self.compact, detach=detach)
        q_ids = ctx.input_ids.index_select(0, plan.rows).gather(1, plan.q_pos)  # [B', Lq]
        q_rotary = ctx.rotary.index_select(0, plan.rows).gather(1, plan.q_pos)  # [B', Lq]
        if self.rebase is not None:
            if ctx.rotary_frequency is None:
                raise RuntimeError("re-basing the shared keys needs the batch's per-frequency rotary positions")
            plan.key_rotation = self.rebase.key_rotation(ctx.rotary_frequency.index_select(0, plan.rows))
        grad = torch.set_grad_enabled(not detach and torch.is_grad_enabled())
        with grad, self.teacher.active(), self.router.teaching(plan):
            hidden = self.teacher.hidden_states(q_ids, q_rotary)  # [B', Lq, H]
        self.teacher_forwards += 1
        return hidden[entries[:, 0], entries[:, 1]]  # [N, H]

    def loss(
        self,
        student: torch.Tensor | StudentHead,
        labels: torch.Tensor,
        ctx: BatchContext,
        *,
        num_items_in_batch: Any = None,
        loss_scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, StepStats]:
        """``labels`` [B, K] as swift's loss receives them (unshifted, cut to K); ``student`` the logits [B, K, V]
        swift hands it, or (fused-linear path) a ``StudentHead`` of the final hidden states [B, K, H] that the
        output layer received plus its weight and bias: then no [B*K, V] tensor is ever made."""
        self.finish_capture()
        cfg = self.config.loss
        fused_head = isinstance(student, StudentHead)
        reference = student.hidden if fused_head else student  # [B, K, H] or [B, K, V]
        n_rows, n_kept, width = reference.shape
        device = reference.device
        targets = torch.roll(labels, shifts=-1, dims=-1)  # [B, K]: the token each logit predicts
        supervised = targets != IGNORE_INDEX  # [B, K]
        positions = kept_positions(ctx.logits_to_keep, ctx.input_ids.shape[1], device)  # [K]
        weight = ctx.token_weight.to(device)[:, positions]  # [B, K]
        distilled = supervised & (weight > 0) & (cfg.lambda_ > 0)  # [B, K]

        ce_weight = torch.ones_like(weight, dtype=torch.float32)
        if cfg.mode == "replace":
            ce_weight = 1.0 - cfg.alpha * weight.float()
        if loss_scale is not None:
            ce_weight = ce_weight * loss_scale.reshape(n_rows, n_kept).float()
        flat_student = reference.reshape(-1, width)  # [B*K, V] or [B*K, H] (a view)
        if fused_head:
            flat_student = student._replace(hidden=flat_student)
        flat_targets, flat_ce_weight = targets.reshape(-1), ce_weight.reshape(-1)
        kd_tokens = reference.new_zeros(0, dtype=torch.float32)
        teacher_ran = kd_skipped = False
        hidden = None
        if distilled.any():
            logit_mask = torch.zeros_like(ctx.valid)
            logit_mask[:, positions] = distilled
            hidden = self._guarded_teacher_hidden(ctx, logit_mask)  # [N, H], same order as distilled.nonzero()
            teacher_ran = True
            # A NaN/inf teacher must not corrupt the update: the batch trains on CE alone, and says so.
            kd_skipped = not bool(torch.isfinite(hidden).all()) or not self._head_is_finite()
        if hidden is not None and not kd_skipped:
            kd_weight = cfg.lambda_ * weight[distilled].float()
            if cfg.mode == "replace":
                kd_weight = kd_weight * cfg.alpha
            with self.teacher.head_weights() as (head_weight, head_bias):
                out = fused_loss(
                    flat_student,
                    flat_targets,
                    flat_ce_weight,
                    TeacherHead(hidden, head_weight, head_bias),
                    kd_weight,
                    distilled.reshape(-1).nonzero().flatten(),
                    vocab=self.shared_vocab,
                    chunk_size=self.chunk_size,
                    return_argmax=fused_head,
                    **cfg.model_dump(include={"divergence", "beta", "temperature", "top_k"}),
                )
            total, ce_tokens, kd_tokens = out[:3]
        else:
            out = cross_entropy_sum(
                flat_student, flat_targets, flat_ce_weight, chunk_size=self.chunk_size, return_argmax=fused_head
            )
            total, ce_tokens = out[:2]
        argmax = out[-1].reshape(n_rows, n_kept) if fused_head else None  # [B, K]: swift's accuracy reads it
        if not torch.isfinite(total):
            raise FloatingPointError(
                "the LinguDistill loss is not finite although the teacher's hidden states and head are: the "
                "student's logits overflowed (check the learning rate and dtype)"
            )
        if num_items_in_batch is None:
            num_items_in_batch = supervised.sum()
        if isinstance(num_items_in_batch, torch.Tensor):
            num_items_in_batch = num_items_in_batch.to(total.device)
        loss = total / num_items_in_batch
        stats = StepStats(
            ce=ce_tokens[supervised.reshape(-1)],
            kd=kd_tokens,
            distilled=(ctx.sample_weight > 0).float(),
            teacher_ran=teacher_ran,
            kd_skipped=kd_skipped,
            argmax=argmax,
        )
        return loss, stats

    def _head_is_finite(self) -> bool:
        """The frozen teacher's output layer is checked once: it cannot change during training."""
        if self._head_finite is None:
            with self.teacher.head_weights() as (weight, bias):
                self._head_finite = bool(torch.isfinite(weight).all()) and (
                    bias is None or bool(torch.isfinite(bias).all())
                )
        return self._head_finite

    def _guarded_teacher_hidden(self, ctx: BatchContext, logit_mask: torch.Tensor) -> torch.Tensor:
        """The teacher's forward, with out-of-memory turned into an error that says what to change."""
        try:
            return self.teacher_hidden(ctx, logit_mask)
        except RuntimeError as e:
            if not _is_out_of_memory(e):
                raise
            rows = int(logit_mask.any(dim=1).sum())
            raise TeacherOutOfMemoryError(
                f"The LinguDistill teacher ({self.teacher.description}) ran out of memory on a batch of {rows} "
                f"distilled rows x {ctx.input_ids.shape[1]} tokens: {str(e).splitlines()[0]}. Fix: set "
                "teacher.dtype: bfloat16, teacher.offload: true, a smaller --per_device_train_batch_size or "
                "--max_length, or shard the teacher with --deepspeed zero3."
            ) from e


class TeacherOutOfMemoryError(RuntimeError):
    """The teacher's forward did not fit; raised with the settings that would make it fit."""


def _is_out_of_memory(error: RuntimeError) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error).lower()
    return "out of memory" in message or "can't allocate memory" in message
