"""The vision encoder, pre-trained alone as real VLMs' encoders are (SigLIP, CLIP) before they meet the LM.

Qwen2.5-VL's vision tower with its merger learns colour, shape, count and digit as classification from its
mean-pooled output tokens, in a plain PyTorch loop; the classification heads are thrown away.
"""

from __future__ import annotations

import random

import torch

from .data import draw_for
from .models import image_processor
from .world import COLOURS, SHAPES

__all__ = ["pretrain_vision"]

CLASSES = {"colour": COLOURS, "shape": SHAPES, "count": (1, 2, 3, 4), "digit": tuple(range(10))}


def _label(task: str, picture) -> int:
    if task == "colour":
        return COLOURS.index(picture.colour)
    if task == "shape":
        return SHAPES.index(picture.shape)
    if task == "count":
        return picture.number - 1
    return picture.number


def _batch(rng: random.Random, size: int, processor) -> tuple[dict, list[str], torch.Tensor]:
    tasks = [rng.choice(tuple(CLASSES)) for _ in range(size)]
    pictures = [draw_for(task, rng) for task in tasks]
    inputs = processor(images=[p.image for p in pictures], return_tensors="pt")
    labels = torch.tensor([_label(t, p) for t, p in zip(tasks, pictures, strict=True)])
    return inputs, tasks, labels


def _pooled(visual: torch.nn.Module, inputs: dict, size: int) -> torch.Tensor:
    out = visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    tokens = out.pooler_output if hasattr(out, "pooler_output") else out  # [size * 4, hidden] merged tokens
    return tokens.reshape(size, -1, tokens.shape[-1]).mean(dim=1)  # [size, hidden]


def pretrain_vision(visual: torch.nn.Module, hidden: int, seed: int, steps: int, batch_size: int = 32,
                    lr: float = 3e-3) -> dict[str, float]:  # fmt: skip
    """Train ``visual`` (a VLM's vision tower, in place); returns its probe accuracy per task on 400 pictures."""
    torch.manual_seed(seed)
    visual.train()
    heads = torch.nn.ModuleDict({task: torch.nn.Linear(hidden, len(c)) for task, c in CLASSES.items()})
    optimizer = torch.optim.AdamW([*visual.parameters(), *heads.parameters()], lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    processor = image_processor()
    rng = random.Random(f"vision-pretrain-{seed}")
    for _ in range(steps):
        inputs, tasks, labels = _batch(rng, batch_size, processor)
        pooled = _pooled(visual, inputs, batch_size)
        loss = sum(
            torch.nn.functional.cross_entropy(heads[t](pooled[i : i + 1]), labels[i : i + 1])
            for i, t in enumerate(tasks)
        )
        (loss / batch_size).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    visual.eval()
    with torch.no_grad():
        inputs, tasks, labels = _batch(random.Random(f"vision-probe-{seed}"), 400, processor)
        pooled = _pooled(visual, inputs, 400)
        right: dict[str, list[bool]] = {task: [] for task in CLASSES}
        for i, task in enumerate(tasks):
            right[task].append(int(heads[task](pooled[i]).argmax()) == int(labels[i]))
    return {task: sum(v) / max(1, len(v)) for task, v in right.items()}
