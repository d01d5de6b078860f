"""Stage 1b, the vision encoder: Qwen2.5-VL's vision tower pre-trained alone, as real VLMs start from one.

Real VLMs join a pre-trained vision encoder (SigLIP, ...) to a pre-trained LM. Here the tower (with its merger)
learns the four picture tasks as classification from its mean-pooled tokens, in a plain PyTorch loop; the
heads are thrown away. Multimodal fine-tuning (stage 2, ``swift sft``) then teaches the LM to read it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .images import SHAPES, VISION_PROMPTS, draw_vision_question
from .models import Sizes, image_processor, make_vision_tower
from .world import COLOURS, NUMBER_WORDS

__all__ = ["VisionRecipe", "pretrain_vision"]

CLASSES = {
    "colour": list(COLOURS),
    "shape": list(SHAPES),
    "count": list(NUMBER_WORDS[1:5]),
    "digit": list(NUMBER_WORDS[:10]),
}


@dataclass(frozen=True)
class VisionRecipe:
    """Optimiser settings of the vision tower's pre-training."""

    steps: int = 400
    batch_size: int = 32
    lr: float = 2e-3


def _batch(rng: random.Random, size: int, processor) -> tuple[dict, list[str], torch.Tensor]:
    tasks = [tuple(VISION_PROMPTS)[rng.randrange(len(VISION_PROMPTS))] for _ in range(size)]
    drawn = [draw_vision_question(rng, task) for task in tasks]
    inputs = processor(images=[image for image, _ in drawn], return_tensors="pt")
    labels = torch.tensor([CLASSES[task].index(q.answer) for task, (_, q) in zip(tasks, drawn, strict=True)])
    return inputs, tasks, labels


def _pooled(tower: torch.nn.Module, inputs: dict, size: int) -> torch.Tensor:
    out = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    tokens = out.pooler_output if hasattr(out, "pooler_output") else out  # [size * 9, hidden] merged tokens
    return tokens.view(size, -1, tokens.shape[-1]).mean(dim=1)  # [size, hidden]


def pretrain_vision(sizes: Sizes, seed: int, recipe: VisionRecipe) -> tuple[dict, dict[str, float]]:
    """The trained tower's state dict and its probe accuracy per task on 400 fresh pictures."""
    torch.manual_seed(seed)
    tower = make_vision_tower(sizes, seed).train()
    heads = torch.nn.ModuleDict({task: torch.nn.Linear(sizes.hidden, len(c)) for task, c in CLASSES.items()})
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=0.1)
    processor = image_processor()
    rng = random.Random(f"vision-pretrain-{seed}")
    for _ in range(recipe.steps):
        inputs, tasks, labels = _batch(rng, recipe.batch_size, processor)
        pooled = _pooled(tower, inputs, recipe.batch_size)
        loss = sum(
            torch.nn.functional.cross_entropy(heads[t](pooled[i : i + 1]), labels[i : i + 1])
            for i, t in enumerate(tasks)
        )
        (loss / recipe.batch_size).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    tower.eval()
    with torch.no_grad():
        inputs, tasks, labels = _batch(random.Random(f"vision-probe-{seed}"), 400, processor)
        pooled = _pooled(tower, inputs, 400)
        right: dict[str, list[bool]] = {task: [] for task in CLASSES}
        for i, task in enumerate(tasks):
            right[task].append(int(heads[task](pooled[i]).argmax()) == int(labels[i]))
    return tower.state_dict(), {task: sum(v) / len(v) for task, v in right.items()}
