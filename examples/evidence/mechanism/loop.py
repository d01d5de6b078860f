"""The training loop every stage uses, with the optimizer ``swift sft`` builds by default.

swift 4.6 defaults (``Seq2SeqTrainingArguments``): AdamW with betas (0.9, 0.95), weight decay 0.1 on every
parameter but biases and norms, a cosine schedule, gradient clipping at 1.0; transformers' Trainer steps in
this order: clip, optimizer, scheduler, zero_grad.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

__all__ = ["Optim", "make_optimizer", "train"]

_NO_DECAY = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")


@dataclass(frozen=True)
class Optim:
    """One stage's optimizer settings (swift's defaults unless a stage says otherwise)."""

    lr: float
    steps: int
    warmup_ratio: float = 0.0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float = 1.0


def make_optimizer(
    model: torch.nn.Module, optim: Optim
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters, grouped as transformers' Trainer groups them, and the cosine schedule."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if _NO_DECAY.search(name) else decay).append(param)
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=1e-8)
    warmup = math.ceil(optim.warmup_ratio * optim.steps)

    def factor(step: int) -> float:  # transformers' get_cosine_schedule_with_warmup
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, optim.steps - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    model: torch.nn.Module,
    batches: Iterable,
    loss_of: Callable[[object], tuple[torch.Tensor, dict]],
    optim: Optim,
) -> list[dict]:
    """``optim.steps`` updates, one batch each; returns each step's logged values (loss and whatever
    ``loss_of`` reports, e.g. ce_loss, kd_loss, distill_frac)."""
    model.train()
    optimizer, schedule = make_optimizer(model, optim)
    params = [p for p in model.parameters() if p.requires_grad]
    log = []
    iterator = iter(batches)
    for _ in range(optim.steps):
        loss, stats = loss_of(next(iterator))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, optim.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        log.append({"loss": float(loss.detach()), **stats})
    model.eval()
    return log
