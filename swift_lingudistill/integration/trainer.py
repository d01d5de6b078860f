"""ms-swift's trainer and loss glue: the batch read into a ``BatchContext``, the step handed to the Distiller,
its numbers handed back as swift metrics.

swift calls a registered loss as ``loss(outputs, labels, num_items_in_batch=..., loss_scale=..., trainer=...)``
without the batch, and pops the per-sample ``channel`` (where the tags travel) before the forward. So the
trainer reads what the loss needs from the batch first, and the loss asks the trainer for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from swift.loss import BaseLoss
from swift.metrics.utils import Metric
from swift.trainers import Seq2SeqTrainer
from swift.utils import get_logger

from ..distiller import BatchContext, Distiller
from ..tagging import decode_channel
from .resume import SaveConfigWithCheckpoints, restore_renamed_weights
from .row_guard import BadRowsMetric
from .run_state import active_run
from .teacher_loading import build_distiller

__all__ = ["FULL_LABELS_KEY", "LinguDistillLoss", "LinguDistillTrainer", "SumMetric", "batch_context"]

logger = get_logger()
FULL_LABELS_KEY = "_lingudistill_full_labels"  # stashed before swift cuts labels to `logits_to_keep`


def batch_context(inputs: dict[str, Any], padding_free: bool) -> BatchContext:
    """Read tags and positions from swift's batch; give swift back the user's own channels.

    Pops the plugin's keys (``channel``, the full labels) so they never reach the model's forward.
    """
    full_labels = inputs.pop(FULL_LABELS_KEY, None)
    channels = inputs.pop("channel", None)
    input_ids = inputs["input_ids"]
    if channels is None:
        channels = [None] * (1 if padding_free else input_ids.shape[0])
    originals, weights = [], []
    for channel in channels:
        original, decision = decode_channel(channel)
        originals.append(original)
        weights.append(decision.weight)
    if any(c is not None for c in originals):
        inputs["channel"] = originals  # swift's --enable_channel_loss sees the user's channels, as before
    sample_weight = torch.tensor(weights, dtype=torch.float32, device=input_ids.device)  # [S]
    mask = inputs.get("attention_mask")
    valid = torch.ones_like(input_ids, dtype=torch.bool) if mask is None or mask.dim() != 2 else mask.bool()
    segment = None
    if padding_free:
        # packed row: a new sequence starts wherever the text position restarts at 0
        text_pos = inputs.get("text_position_ids")
        segment = (text_pos == 0).long().cumsum(-1) - 1  # [1, L]
        token_weight = sample_weight[segment.clamp(min=0, max=len(weights) - 1)]
    else:
        token_weight = sample_weight[:, None].expand_as(input_ids)
    return BatchContext(
        input_ids=input_ids,
        labels=full_labels if full_labels is not None else inputs["labels"],
        valid=valid,
        token_weight=token_weight,
        sample_weight=sample_weight,
        segment=segment,
        logits_to_keep=inputs.get("logits_to_keep"),
    )


class LinguDistillTrainer(Seq2SeqTrainer):
    """swift's Seq2SeqTrainer plus the frozen teacher (through the Distiller) and LinguDistill's metrics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        state = active_run()
        if state is None:
            raise RuntimeError(
                "LinguDistillTrainer was created without an accepted LinguDistill config; run it through "
                "`swift sft --external_plugins $(python -m swift_lingudistill plugin-path) --loss_type lingudistill`"
            )
        self.lingudistill: Distiller = build_distiller(state, self.model, self)
        self._lingudistill_batch: BatchContext | None = None
        for mode in ("train", "eval"):
            # Created on every rank up front: a metric first seen on one rank only would desynchronise the
            # all-reduce swift runs when it logs.
            self.custom_metrics[mode]["kd_skipped"] = SumMetric(device=self.args.device)
        if state.bad_rows is not None:  # rows swift dropped or replaced, per logging step (row_guard)
            self.custom_metrics["train"]["bad_rows"] = BadRowsMetric(state.bad_rows, device=self.args.device)
        self.add_callback(SaveConfigWithCheckpoints(state.config_text))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Resume the student's weights for real (transformers 5.19 skips them for some VLMs, with a warning only)."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        restored = restore_renamed_weights(model or self.model, Path(resume_from_checkpoint))
        if restored:
            logger.info(f"LinguDistill: restored {restored} student weights from {resume_from_checkpoint} under "
                        "their current names (transformers' resume had skipped them)")  # fmt: skip

    def prepare_logits_to_keep(self, inputs: dict[str, Any]) -> None:
        inputs[FULL_LABELS_KEY] = inputs["labels"]
        super().prepare_logits_to_keep(inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ctx = batch_context(inputs, self.template.padding_free)
        self.lingudistill.start_step(ctx, inputs, self.model)
        self._lingudistill_batch = ctx
        try:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        finally:
            self._lingudistill_batch = None
            self.lingudistill.end_step()  # drop the captured K/V before backward

    def lingudistill_loss(self, outputs, labels, num_items_in_batch=None, loss_scale=None):
        ctx = self._lingudistill_batch
        if ctx is None:
            raise RuntimeError("the LinguDistill loss was called outside LinguDistillTrainer.compute_loss")
        loss, stats = self.lingudistill.loss(
            outputs.logits, labels, ctx, num_items_in_batch=num_items_in_batch, loss_scale=loss_scale
        )
        metrics = self.custom_metrics["train" if self.model.training else "eval"]
        metrics["ce_loss"].update(stats.ce)
        if stats.kd.numel():
            metrics["kd_loss"].update(stats.kd)
        metrics["distill_frac"].update(stats.distilled)
        if stats.kd_skipped:
            metrics["kd_skipped"].update(1)
            logger.warning(
                f"LinguDistill: the teacher gave non-finite values at step {self.state.global_step}; this batch "
                "trained on cross-entropy only (counted in kd_skipped). Check the teacher's weights and dtype."
            )
        return loss


class SumMetric(Metric):
    """A count summed over ranks and over the logging window; not logged while it is zero."""

    def __init__(self, device: Any = None) -> None:
        super().__init__()
        self.add_state("total", default=0.0)
        self.device = device

    def update(self, value: float) -> None:
        self.total += float(value)

    def compute(self) -> dict:
        total = self.total
        if dist.is_initialized():
            tensor = torch.tensor([total], dtype=torch.float32, device=self.device)
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            total = float(tensor.item())
        return {"value": total if total else None}


class LinguDistillLoss(BaseLoss):
    """``--loss_type lingudistill``: CE on every supervised token plus the teacher's distillation term."""

    def __call__(self, outputs, labels, *, num_items_in_batch=None, loss_scale=None, trainer=None, **kwargs):
        trainer = trainer or self.trainer
        if not isinstance(trainer, LinguDistillTrainer):
            raise RuntimeError(
                f"--loss_type lingudistill needs the LinguDistill trainer, got {type(trainer).__name__}. "
                "It runs with `swift sft` / `swift pt` (task_type causal_lm) and the plugin loaded via "
                "--external_plugins."
            )
        return trainer.lingudistill_loss(outputs, labels, num_items_in_batch=num_items_in_batch, loss_scale=loss_scale)
