"""In-process harness for the direct tests: a tiny VLM training as swift trains it, and its Distiller.

A family's tests describe their tiny student in a ``FamilyCase`` and run the shared checks of
``invariants.py`` on it; nothing here is specific to one family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from swift_lingudistill.config import config_from_dict
from swift_lingudistill.distiller import BatchContext, Distiller
from swift_lingudistill.families import FamilyAdapter, family_for
from swift_lingudistill.kv_share import ROUTER
from swift_lingudistill.teacher import frozen_copy_teacher, separate_teacher

SCOPES = ("image", "prompt", "all")


@dataclass
class FamilyCase:
    """One tiny student and what the checks need to drive it.

    ``build_batch(images_seed)`` returns a right-padded batch of three samples: row 0 with two images, row 1
    text-only, row 2 with one image; keys ``input_ids``, ``attention_mask``, ``labels`` (assistant turn
    supervised, -100 elsewhere) plus whatever the student's forward takes (``forward_keys``). Another
    ``images_seed`` must give images of the same sizes with different pixels.
    """

    name: str  # swift model_type of the student
    student: nn.Module
    other_teacher: nn.Module  # a text-only LM shaped like the student's LM, with different weights
    build_batch: Callable[[int], dict]
    forward_keys: tuple[str, ...]
    text_only_row: int = 1

    @property
    def family(self) -> FamilyAdapter:
        return family_for(self.name)

    def batch(self, images_seed: int = 0) -> dict:
        return self.build_batch(images_seed)


def train_like_swift(model: nn.Module) -> nn.Module:
    """Train mode with reentrant gradient checkpointing and input grads, as swift sets a model up by default."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()
    return model.train()


def distiller_for(
    case: FamilyCase,
    teacher_model=None,
    scope: str = "image",
    compact: bool = True,
    loss: dict | None = None,
    rebase=None,
) -> Distiller:
    """Self teacher (a frozen copy) when ``teacher_model`` is None, else that text-only LM."""
    family, student = case.family, case.student
    config = config_from_dict({"teacher": {"model": "self"}, "kv_share": {"scope": scope}, "loss": loss or {}})
    runner = frozen_copy_teacher(student, family) if teacher_model is None else separate_teacher(teacher_model, "other")
    return Distiller(
        config,
        family,
        runner,
        shared_vocab=min(runner.vocab_rows, family.lm_head(student).weight.shape[0]),
        student_attention=family.attention_modules(family.language_model(student)),
        compact=compact,
        rebase=rebase,
    )


def context(case: FamilyCase, batch: dict, weights=(1.0, 1.0, 1.0)) -> BatchContext:
    family, student = case.family, case.student
    ids = batch["input_ids"]
    sample_weight = torch.tensor(weights, dtype=torch.float32)
    return BatchContext(
        input_ids=ids,
        labels=batch["labels"],
        valid=batch["attention_mask"].bool(),
        rotary=family.rotary_positions(batch, student),
        vision=family.vision_mask(ids, student.config),
        token_weight=sample_weight[:, None].expand_as(ids),
        sample_weight=sample_weight,
    )


def student_logits(case: FamilyCase, batch: dict, capture: bool = True) -> torch.Tensor:
    """[B, L, V] student logits from a training-mode forward that also captures the per-layer K/V."""
    if capture:
        ROUTER.start_capture()
    out = case.student(**{k: batch[k] for k in case.forward_keys if k in batch})
    if capture:
        ROUTER.finish_capture()
    return out.logits


def teacher_logits(distiller: Distiller, ctx: BatchContext, positions: torch.Tensor) -> torch.Tensor:
    """[N, V] teacher logits at ``positions`` [B, L] (row-major order)."""
    with torch.no_grad():
        hidden = distiller.teacher_hidden(ctx, positions)
        return distiller.teacher.head(hidden)


def text_positions(ctx: BatchContext) -> torch.Tensor:
    return ctx.valid & ~ctx.vision
