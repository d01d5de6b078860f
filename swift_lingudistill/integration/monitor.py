"""``--callbacks lingudistill_monitor``: is the student keeping its language? Measured at every evaluation.

On a held-out text-only set (``monitor.dataset`` in the plugin config) it measures the student's perplexity
(``lang_ppl``), the teacher-student divergence (``lang_kl``, forward KL per supervised token) and, once, the
teacher's own perplexity (``lang_teacher_ppl``, the level to come back to). They are evaluation metrics:
``eval_lang_ppl`` etc. in swift's logs and ``logging.jsonl``, ``eval/lang_ppl`` in tensorboard (transformers
files ``eval_*`` keys there), and usable as ``--metric_for_best_model lang_ppl``. The first point is measured at
the start of training (step 0, unless ``--eval_on_start`` already evaluates there); at the end
``lingudistill_language.png`` in the output directory plots them (``monitor_plot``). Without images the teacher
needs no shared K/V: it runs as the plain text LM it is. Its preconditions (the dataset, an evaluation schedule,
the loss type) are checked before any model loads (``flag_checks``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from swift.callbacks.base import TrainerCallback
from swift.utils import get_logger, is_master

from ..loss_inputs import auto_chunk
from ..losses import IGNORE_INDEX, TeacherHead, cross_entropy_sum, fused_loss
from ..monitor_plot import plot_language
from .run_state import active_run

__all__ = ["METRICS", "PLOT_FILENAME", "LanguageMonitor"]

PLOT_FILENAME = "lingudistill_language.png"
# The names as logged (evaluation metrics: transformers' `eval_` prefix files them under eval/ in tensorboard).
METRICS = {"lang_ppl": "eval_lang_ppl", "lang_kl": "eval_lang_kl", "teacher_ppl": "eval_lang_teacher_ppl"}
logger = get_logger()


def _teacher_ce_sum(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor):
    """Sum of the teacher's own CE over ``targets`` [N] from its final hidden states [N, H], over its whole head,
    chunk by chunk (never a [N, V] tensor)."""
    total = 0.0
    rows = auto_chunk(None, weight.shape[0])
    for start in range(0, hidden.shape[0], rows):
        logits = torch.nn.functional.linear(hidden[start : start + rows], weight, bias)  # [c, V_t]
        chunk = targets[start : start + rows]
        total += float(cross_entropy_sum(logits, chunk, torch.ones_like(chunk, dtype=torch.float32))[0])
    return total


class LanguageMonitor(TrainerCallback):
    """Perplexity of the student and KL to the teacher on held-out text, at each evaluation."""

    def __init__(self, args: Any, trainer: Any) -> None:
        super().__init__(args, trainer)
        state = active_run()
        if state is None:  # activation refuses the callback without the loss type, so swift skipped the plugin
            raise RuntimeError("lingudistill_monitor was created without an accepted LinguDistill run")
        self.settings = state.config.monitor
        self.history: list[dict[str, float]] = []
        self.teacher_ppl: float | None = None  # the frozen teacher's: measured once
        self.tokens = 0  # supervised tokens of the held-out set
        self._start_pending = False
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
        """{'lang_ppl', 'lang_kl', 'teacher_ppl'} of the current student on the held-out text."""
        trainer = self.trainer
        distiller = trainer.lingudistill
        model, device = trainer.model, trainer.args.device
        ce_sum = kl_sum = teacher_ce_sum = 0.0
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
                    if self.teacher_ppl is None:
                        teacher_ce_sum += _teacher_ce_sum(teacher_hidden, weight, bias, targets[supervised])
                ce_sum, kl_sum = ce_sum + float(ce.sum()), kl_sum + float(kl.sum())
                tokens += int(supervised.sum())
        finally:
            model.train(was_training)
        if tokens == 0:
            raise ValueError(f"monitor.dataset {self.settings.dataset} has no supervised (assistant) tokens")
        if self.teacher_ppl is None:
            self.teacher_ppl, self.tokens = math.exp(teacher_ce_sum / tokens), tokens
        return {"lang_ppl": math.exp(ce_sum / tokens), "lang_kl": kl_sum / tokens, "teacher_ppl": self.teacher_ppl}

    def record(self, step: int, metrics: dict | None = None) -> dict[str, float]:
        """Measure, keep the point for the plot and log it as evaluation metrics (also into ``metrics``: the dict
        the trainer's evaluation returns, so ``--metric_for_best_model lang_ppl`` can use it)."""
        values = self.measure()
        self.history.append({"step": step, **values})
        logged = {METRICS[key]: value for key, value in values.items()}
        if metrics is not None:
            metrics.update(logged)
        self.trainer.log(dict(logged))
        return values

    # --- swift's hooks -------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        # The step-0 point (where the language starts from), unless --eval_on_start evaluates there anyway. It is
        # taken at the first step's start: the weights are the same, and swift's log printer is ready by then.
        self._start_pending = not getattr(args, "eval_on_start", False)
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        if self._start_pending:
            self._start_pending = False
            self.record(state.global_step)
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        self.record(state.global_step, kwargs.get("metrics"))
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.settings.plot and is_master():
            self.plot(Path(args.output_dir) / PLOT_FILENAME)
        return control

    def plot(self, path: Path) -> Path | None:
        """The student's perplexity against the teacher's, and the KL, over the steps (``monitor_plot``)."""
        if not self.history:
            logger.warning("lingudistill_monitor: no evaluation ran, so there is nothing to plot")
            return None
        rows = len(self._encoded or [])
        plot_language(self.history, path, teacher_ppl=self.teacher_ppl, rows=rows, tokens=self.tokens)
        logger.info(f"lingudistill_monitor: plot written to {path}")
        return path
