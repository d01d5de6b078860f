"""Stage 1, the original LM: a small ``Qwen2ForCausalLM`` trained from scratch with a plain PyTorch loop.

The rows are encoded by swift's template (the same ChatML text ``swift sft`` trains the VLM on), so the LM, the
VLM built from it and the teacher all see one format. A plain loop is used because it is fast: thousands of
tiny steps, no per-run start-up.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .evaluate import collate
from .models import Sizes, make_lm

__all__ = ["PretrainRecipe", "pretrain_lm"]


@dataclass(frozen=True)
class PretrainRecipe:
    """Optimiser settings of the LM's pre-training."""

    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01


def _lr_factor(step: int, recipe: PretrainRecipe) -> float:
    if step < recipe.warmup:
        return (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def pretrain_lm(
    rows: list[dict[str, Any]],
    template: Any,
    out_dir: Path,
    sizes: Sizes,
    vocab_rows: int,
    seed: int,
    recipe: PretrainRecipe,
) -> list[float]:
    """Train the LM on ``rows`` (swift-format text rows) and save it into ``out_dir``; returns the loss curve."""
    torch.manual_seed(seed)
    model = make_lm(sizes, vocab_rows, seed).train()
    encoded = [template.encode(row) for row in rows]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, recipe))
    rng = random.Random(f"pretrain-{seed}")
    order: list[int] = []
    losses = []
    for _ in range(recipe.steps):
        if len(order) < recipe.batch_size:
            order += rng.sample(range(len(encoded)), len(encoded))
        batch = collate([encoded[i] for i in order[: recipe.batch_size]])
        del order[: recipe.batch_size]
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval().save_pretrained(out_dir)
    return losses
