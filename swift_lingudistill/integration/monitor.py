"""``--callbacks lingudistill_monitor``: is the student keeping its language? Measured at every evaluation.

On a held-out text-only set (``monitor.dataset`` in the plugin config) it logs the student's perplexity
(``lang_ppl``) and the teacher-student divergence (``lang_kl``, forward KL per supervised token) into swift's
logs, ``logging.jsonl`` and tensorboard, and at the end plots both over the steps into
``lingudistill_language.png`` in the output directory. Without images the teacher needs no shared K/V: it runs
as the plain text LM it is. Its preconditions (the dataset, an evaluation schedule, the loss type) are checked
before any model loads (``flag_checks``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from swift.callbacks.base import TrainerCallback
from swift.utils import get_logger, is_master

from ..losses import IGNORE_INDEX, TeacherHead, fused_loss
from .run_state import active_run

__all__ = ["PLOT_FILENAME", "LanguageMonitor"]

PLOT_FILENAME = "lingudistill_language.png"
logger = get_logger()


class LanguageMonitor(TrainerCallback):
    """Perplexity of the student and KL to the teacher on held-out text, at each evaluation."""

    def __init__(self, args: Any, trainer: Any) -> None:
        super().__init__(args, trainer)
        state = active_run()
        if state is None:  # activation refuses the callback without the loss type, so swift skipped the plugin
            raise RuntimeError("lingudistill_monitor was created without an accepted LinguDistill run")
        self.settings = state.config.monitor
        self.history: list[dict[str, float]] = []
        self._encoded: list[dict] | None = None

    # --- data ----------------------------------------------------------------------------------------
    def _rows(self) -> list[dict]:
        """The held-out rows, encoded once with the run's own template (labels on the assistant turns)."""
        if self._encoded is None:
            from swift.dataset import load_dataset

            dataset, _ = load_dataset([self.settings.dataset], split_dataset_ratio=0.0, shuffle=False)
            rows = [dataset[i] for i in range(min(len(dataset), self.settings.max_samples))]
            with_images = [i for i, row in enumerate(rows) if row.get("images") or row.get("videos")]
            if with_images:
                raise ValueError(
                    f"monitor.dataset {self.settings.dataset} must be text-only (it measures language), but rows "
                    f"{with_images[:5]} have images or videos. Fix: point it at text-only held-out rows."
                )
            template = self.trainer.template
            self._encoded = [template.encode(row) for row in rows]
        return self._encoded

    # --- measurement ---------------------------------------------------------------------------------
    @torch.no_grad()
    def measure(self) -> dict[str, float]:
        """{'lang_ppl': ..., 'lang_kl': ...} of the current student on the held-out text."""
        trainer = self.trainer
        distiller = trainer.lingudistill
        model, device = trainer.model, trainer.args.device
        ce_sum = kl_sum = 0.0
        tokens = 0
        was_training = model.training
        model.eval()
        try:
            rows = self._rows()
            for start in range(0, len(rows), self.settings.batch_size):
                batch = trainer.template.data_collator(rows[start : start + self.settings.batch_size])
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                labels = batch.pop("labels")
                forward = {k: v for k, v in batch.items() if k not in ("text_position_ids", "channel", "loss_scale")}
                logits = trainer.model(**forward).logits  # [B, L, V]
                targets = torch.roll(labels, -1, dims=-1)  # [B, L]
                supervised = targets != IGNORE_INDEX
                teacher_hidden = distiller.text_teacher_hidden(batch, trainer.model)[supervised]  # [N, H]
                with distiller.teacher.head_weights() as (weight, bias):
                    # CE and KL in one pass over the logits: (total, CE per row [B*L], KL per supervised row [N])
                    _, ce, kl = fused_loss(
                        logits.flatten(0, 1),
                        targets.flatten(),
                        supervised.flatten().float(),
                        TeacherHead(teacher_hidden, weight, bias),
                        torch.ones(int(supervised.sum()), device=logits.device),
                        supervised.flatten().nonzero().flatten(),
                        vocab=distiller.shared_vocab,
                    )
                ce_sum, kl_sum = ce_sum + float(ce.sum()), kl_sum + float(kl.sum())
                tokens += int(supervised.sum())
        finally:
            model.train(was_training)
        if tokens == 0:
            raise ValueError(f"monitor.dataset {self.settings.dataset} has no supervised (assistant) tokens")
        return {"lang_ppl": math.exp(ce_sum / tokens), "lang_kl": kl_sum / tokens}

    # --- swift's hooks -------------------------------------------------------------------------------
    def on_evaluate(self, args, state, control, **kwargs):
        values = self.measure()
        self.history.append({"step": state.global_step, **values})
        self.trainer.log(dict(values))
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.settings.plot and is_master():
            self.plot(Path(args.output_dir) / PLOT_FILENAME)
        return control

    def plot(self, path: Path) -> Path | None:
        """lang_ppl and lang_kl over the steps, one panel each."""
        if not self.history:
            logger.warning("lingudistill_monitor: no evaluation ran, so there is nothing to plot")
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [h["step"] for h in self.history]
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for axis, key, title in zip(
            axes, ("lang_ppl", "lang_kl"), ("student perplexity", "KL(teacher || student)"), strict=True
        ):
            axis.plot(steps, [h[key] for h in self.history], marker="o")
            axis.set_xlabel("step")
            axis.set_title(f"{key}: {title}")
            axis.grid(alpha=0.3)
        figure.suptitle("held-out text-only set")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        logger.info(f"lingudistill_monitor: plot written to {path}")
        return path
