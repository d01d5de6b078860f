"""ms-swift's trainer and loss glue: per-step batch context in, swift metrics out.

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
from transformers import TrainerCallback

from .distiller import BatchContext, Distiller
from .integration import CONFIG_FILENAME
from .tagging import decode_channel

__all__ = ["LinguDistillLoss", "LinguDistillTrainer", "SaveConfigWithCheckpoints", "SumMetric"]

logger = get_logger()
_FULL_LABELS = "_lingudistill_full_labels"  # stashed before swift cuts labels to `logits_to_keep`


class LinguDistillTrainer(Seq2SeqTrainer):
    """swift's Seq2SeqTrainer plus the frozen teacher, K/V capture and LinguDistill metrics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from .integration import active_run
        from .runtime import build_distiller

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
        self.add_callback(SaveConfigWithCheckpoints(state.config_text))

    # --- resume ------------------------------------------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Resume the student's weights for real (transformers 5.19 skips them for some VLMs, with a warning only).

        A full fine-tuning checkpoint of e.g. Qwen2.5-VL is saved under the legacy key names (``model.layers.*``,
        ``visual.*``) while the live model uses ``model.language_model.*`` / ``model.visual.*``; the trainer's
        non-strict load then matches nothing and training would continue from the initial weights.
        """
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        restored = _restore_renamed_weights(model or self.model, Path(resume_from_checkpoint))
        if restored:
            logger.info(f"LinguDistill: restored {restored} student weights from {resume_from_checkpoint} under "
                        "their current names (transformers' resume had skipped them)")  # fmt: skip

    # --- batch ---------------------------------------------------------------------------------------
    def prepare_logits_to_keep(self, inputs: dict[str, Any]) -> None:
        inputs[_FULL_LABELS] = inputs["labels"]
        super().prepare_logits_to_keep(inputs)

    def _batch_context(self, inputs: dict[str, Any]) -> BatchContext:
        """Read tags and positions from the batch; give swift back the user's own channels."""
        distiller = self.lingudistill
        distiller.family.check_batch(inputs, self.model)
        full_labels = inputs.pop(_FULL_LABELS, None)
        channels = inputs.pop("channel", None)
        input_ids = inputs["input_ids"]
        if channels is None:
            channels = [None] * (1 if self.template.padding_free else input_ids.shape[0])
        originals, weights = [], []
        for channel in channels:
            original, decision = decode_channel(channel)
            originals.append(original)
            weights.append(decision.weight)
        if any(c is not None for c in originals):
            inputs["channel"] = originals  # swift's --enable_channel_loss sees the user's channels, as before
        device = input_ids.device
        sample_weight = torch.tensor(weights, dtype=torch.float32, device=device)  # [S]
        mask = inputs.get("attention_mask")
        valid = torch.ones_like(input_ids, dtype=torch.bool) if mask is None or mask.dim() != 2 else mask.bool()
        segment = None
        if self.template.padding_free:
            # packed row: a new sequence starts wherever the text position restarts at 0
            text_pos = inputs.get("text_position_ids")
            segment = (text_pos == 0).long().cumsum(-1) - 1  # [1, L]
            token_weight = sample_weight[segment.clamp(min=0, max=len(weights) - 1)]
        else:
            token_weight = sample_weight[:, None].expand_as(input_ids)
        ctx = BatchContext(
            input_ids=input_ids,
            labels=full_labels if full_labels is not None else inputs["labels"],
            valid=valid,
            token_weight=token_weight,
            sample_weight=sample_weight,
            segment=segment,
            logits_to_keep=inputs.get("logits_to_keep"),
        )
        if distiller.will_distill(ctx):
            # Only the teacher reads them: a batch that distils nothing skips get_rope_index and the vision scan.
            ctx.rotary = distiller.family.rotary_positions(inputs, self.model)
            ctx.vision = distiller.family.vision_mask(input_ids, _config(self.model))
            if distiller.rebase is not None:  # per-frequency (M-RoPE: 3-D) positions for the re-based keys
                ctx.rotary_frequency = distiller.family.frequency_positions(
                    inputs, self.model, distiller.rebase.frequencies
                )
        return ctx

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ctx = self._batch_context(inputs)
        router = self.lingudistill.router
        if ctx.rotary is not None:  # set exactly when the batch will distil
            router.start_capture()
        self._lingudistill_batch = ctx
        try:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        finally:
            self._lingudistill_batch = None
            router.reset()  # drop the captured K/V before backward

    # --- loss ----------------------------------------------------------------------------------------
    def lingudistill_loss(self, outputs, labels, num_items_in_batch=None, loss_scale=None):
        ctx = self._lingudistill_batch
        if ctx is None:
            raise RuntimeError("the LinguDistill loss was called outside LinguDistillTrainer.compute_loss")
        distiller = self.lingudistill
        if distiller.router.phase == "capture":
            distiller.router.finish_capture()
        loss, stats = distiller.loss(
            outputs.logits,
            labels,
            ctx,
            num_items_in_batch=num_items_in_batch,
            loss_scale=loss_scale,
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


class SaveConfigWithCheckpoints(TrainerCallback):
    """Each checkpoint carries the resolved plugin config, so a resume restores it instead of re-guessing."""

    def __init__(self, text: str) -> None:
        self.text = text

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / CONFIG_FILENAME).write_text(self.text, encoding="utf-8")
        return control


def _restore_renamed_weights(model: torch.nn.Module, checkpoint: Path) -> int:
    """Load a checkpoint's weights whose saved names only match after transformers' own renaming rules."""
    import re

    weights_file = checkpoint / "model.safetensors"
    if not weights_file.is_file() or hasattr(model, "get_base_model"):  # adapters resume through PEFT, fine
        return 0
    from safetensors.torch import load_file
    from transformers.conversion_mapping import WeightRenaming, get_model_conversion_mapping

    saved = load_file(str(weights_file), device="cpu")
    live = model.state_dict()
    if not set(saved) - set(live):  # the names match: transformers loaded them itself
        return 0
    rules = [r for r in get_model_conversion_mapping(model) if type(r) is WeightRenaming]
    renamed = {}
    for key, tensor in saved.items():
        new_key = key
        for rule in rules:
            for source, target in zip(rule.source_patterns, rule.target_patterns, strict=False):
                if re.search(source, key):
                    new_key = re.sub(source, target, key)
                    break
            if new_key != key:
                break
        renamed[new_key] = tensor
    unknown = sorted(set(renamed) - set(live))
    if unknown:
        raise RuntimeError(
            f"Cannot resume the student's weights from {checkpoint}: {len(unknown)} saved tensors match no "
            f"parameter of the model even after transformers' renaming rules (e.g. {unknown[:3]}). Training would "
            "continue from the initial weights. Fix: resume with the transformers version that saved the checkpoint."
        )
    with torch.no_grad():
        for key, tensor in renamed.items():
            live[key].copy_(tensor.to(live[key].dtype))
    return len(renamed)


def _config(model: torch.nn.Module) -> Any:
    from .families.base import _unwrap

    return _unwrap(model).config


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
