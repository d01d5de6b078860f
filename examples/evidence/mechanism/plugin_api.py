"""The one module of the harness that imports swift-lingudistill's internals (adapt here when they move).

What the harness needs from the plugin: its config model, its tagger, its ``Distiller`` with a teacher, and
the trainer's own per-step code (``batch_context``, ``Distiller.start_step`` and
``LinguDistillTrainer.lingudistill_loss``, the last borrowed as a plain function) so an in-process step
computes exactly what ``swift sft --loss_type lingudistill`` computes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml
from swift.trainers.mixin import SwiftMixin

from swift_lingudistill import plugin_path
from swift_lingudistill.config import LinguDistillConfig, config_from_dict, shipped_config_path
from swift_lingudistill.distiller import BatchContext, Distiller
from swift_lingudistill.families import family_for
from swift_lingudistill.integration.trainer import FULL_LABELS_KEY, LinguDistillTrainer, batch_context
from swift_lingudistill.tagging import Tagger
from swift_lingudistill.teacher import frozen_copy_teacher, separate_teacher

__all__ = [
    "REPO",
    "BatchContext",
    "LinguDistillConfig",
    "SwiftStep",
    "make_config",
    "make_distiller",
    "plugin_path",
    "shipped_config",
    "tag_weight",
]

REPO = Path(__file__).resolve().parents[3]
FAMILY = "qwen2_5_vl"


def shipped_config(name: str, **overrides: Any) -> dict[str, Any]:
    """A shipped config (``selective``, ``uniform``: the package's own YAML) as a dict, with ``section.key``
    overrides (e.g. ``loss.temperature``)."""
    path = shipped_config_path(name)
    if path is None:
        raise ValueError(f"{name!r} is not a shipped config of swift-lingudistill")
    data = yaml.safe_load(path.read_text())
    data["teacher"]["model"] = "self"  # replaced by the harness's in-memory teacher; `self` keeps it valid
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        data.setdefault(section, {})[key] = value
    return data


def make_config(data: dict[str, Any]) -> LinguDistillConfig:
    return config_from_dict(data, "<evidence harness>")


def tag_weight(config: LinguDistillConfig) -> Callable[[dict[str, Any]], float]:
    """The plugin's tagging decision for a swift row (what its dataset preprocessor writes into ``channel``)."""
    tagger = Tagger(config.tagging)
    return lambda row: tagger.decide(row).weight


def tag_channel(config: LinguDistillConfig) -> Callable[[dict[str, Any]], str]:
    """The ``channel`` value the plugin's dataset preprocessor writes for a row."""
    tagger = Tagger(config.tagging)
    return lambda row: tagger.tag_row(row)["channel"]


def make_distiller(config: LinguDistillConfig, student: torch.nn.Module, teacher: torch.nn.Module | None) -> Distiller:
    """The plugin's Distiller: ``teacher`` a text-only causal LM, or None for ``self`` (a frozen copy of the
    student's language model, as ``teacher: self`` gives with full fine-tuning)."""
    family = family_for(FAMILY)
    runner = frozen_copy_teacher(student, family) if teacher is None else separate_teacher(teacher, "original LM")
    return Distiller(
        config,
        family,
        runner,
        shared_vocab=min(runner.vocab_rows, student.lm_head.weight.shape[0]),
        student_attention=family.attention_modules(family.language_model(student)),
    )


class _Values:
    """Stands in for swift's metric objects: keeps what the trainer's loss reports each step."""

    def __init__(self) -> None:
        self.values: list[torch.Tensor] = []

    def update(self, value: Any) -> None:
        self.values.append(torch.as_tensor(value, dtype=torch.float32).detach().flatten())

    def mean(self) -> float | None:
        if not self.values:
            return None
        joined = torch.cat(self.values)
        return float(joined.mean()) if joined.numel() else None


class SwiftStep:
    """One training step's loss exactly as ``LinguDistillTrainer`` computes it inside ``swift sft``.

    The order is swift's: ``_prepare_inputs`` (logits_to_keep, full labels stashed), ``compute_loss`` (batch
    context from the tags, K/V capture, swift pops its columns, the template's forward, then the registered
    loss). ``between(router, ctx)`` runs after the student's forward and before the loss (the A4 shuffle).
    """

    def __init__(self, distiller: Distiller, template: Any, model: torch.nn.Module) -> None:
        self.lingudistill = distiller
        self.template = template
        self.model = model
        self.args = SimpleNamespace(tuner_backend="peft")
        self.state = SimpleNamespace(global_step=0)
        self.custom_metrics: dict[str, defaultdict] = {}
        self._lingudistill_batch: BatchContext | None = None
        # No output-layer recorder: the loss reads the student's logits (the reference path of loss.fused_linear,
        # equal to the fused path within float rounding; the committed results were computed on it).
        self._lingudistill_step: dict[str, Any] = {"recorder": None}

    lingudistill_loss = LinguDistillTrainer.lingudistill_loss

    def __call__(
        self,
        batch: dict[str, Any],
        loss_scale: Callable[[BatchContext, torch.Tensor], torch.Tensor] | None = None,
        between: Callable[[Any, BatchContext], None] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float | None]]:
        """The loss of ``batch`` (a swift-collated batch) and the step's ce_loss / kd_loss / distill_frac."""
        self.custom_metrics = {"train": defaultdict(_Values), "eval": defaultdict(_Values)}
        inputs = dict(batch)
        num_items = inputs["labels"][..., 1:].ne(-100).sum()  # transformers' Trainer, per optimizer step
        inputs[FULL_LABELS_KEY] = inputs["labels"]  # LinguDistillTrainer.prepare_logits_to_keep
        SwiftMixin.prepare_logits_to_keep(self, inputs)
        distiller = self.lingudistill
        ctx = batch_context(inputs, self.template.padding_free)  # LinguDistillTrainer.compute_loss from here
        distiller.start_step(ctx, inputs, self.model)
        self._lingudistill_batch = ctx
        try:
            inputs.pop("text_position_ids", None)  # swift's Seq2SeqTrainer.compute_loss pops these
            inputs.pop("channel", None)
            labels = inputs.pop("labels")
            # swift rolls the template's loss_scale by one and flattens it before the registered loss sees it
            scale = None if loss_scale is None else torch.roll(loss_scale(ctx, labels), shifts=-1, dims=-1).view(-1)
            outputs = self.template.compute_sft_loss(self.model, inputs)
            if between is not None and ctx.rotary is not None:
                between(distiller.router, ctx)
            loss = self.lingudistill_loss(outputs, labels, num_items_in_batch=num_items, loss_scale=scale)
        finally:
            self._lingudistill_batch = None
            distiller.end_step()
        metrics = self.custom_metrics["train" if self.model.training else "eval"]
        stats = {name: metrics[name].mean() for name in ("ce_loss", "kd_loss", "distill_frac")}
        return loss, stats


def teacher_answer_logits(
    distiller: Distiller, student: torch.nn.Module, template: Any, batch: dict[str, Any], positions: torch.Tensor
) -> torch.Tensor:
    """[N, V] the teacher's logits at ``positions`` [B, L] (row-major), reading the student's K/V of ``batch``.

    The student runs one forward in eval mode to leave its per-layer K/V; the teacher then runs through the
    Distiller with the batch context the trainer would build (tags all 1: every row is asked).
    """
    inputs = dict(batch)
    inputs[FULL_LABELS_KEY] = inputs["labels"]
    ctx = batch_context(inputs, template.padding_free)
    distiller.start_step(ctx, inputs, student)  # every row tagged 1: fills the rotary positions, starts capture
    if ctx.rotary is None:
        raise ValueError("teacher_answer_logits needs a config with lambda > 0 and every row tagged for distillation")
    forward = {k: v for k, v in inputs.items() if k not in ("labels", "channel", "text_position_ids")}
    try:
        with torch.no_grad():
            student(**forward)
            distiller.finish_capture()
            return distiller.teacher.head(distiller.teacher_hidden(ctx, positions))
    finally:
        distiller.end_step()


__all__ += ["tag_channel", "teacher_answer_logits"]
