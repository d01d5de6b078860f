"""JSONL files in swift's ``messages`` format for every stage, drawn from the seed (images into ``images/``).

Each row carries ``category`` (the paper's split: knowledge / text -> distilled, vision / counting / ocr -> not),
so selective distillation decides from the category, before any prompt rule (a knowledge question such as
"How many rivers does X have ?" would otherwise match the built-in counting pattern).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .images import VISION_PROMPTS, draw_distractor, draw_vision_question
from .world import Question, World, answer_text

__all__ = ["Example", "language_rows", "read_jsonl", "row", "vision_rows", "write_jsonl"]

Example = tuple[Question, str | None]  # a question and its image path (None: text-only)


def row(question: Question, image: str | None, scored: bool = False) -> dict[str, Any]:
    """One swift row: user turn (with ``<image>`` when there is a picture), assistant answer, category.

    ``scored``: also the task and the bare answer word, for the test sets (never given to swift for training).
    """
    prompt = question.prompt if image is None else f"<image>{question.prompt}"
    record: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer_text(question.answer)},
        ],
        "category": question.category,
    }
    if image is not None:
        record["images"] = [image]
    if scored:
        record["task"], record["answer"] = question.task, question.answer
    return record


def write_jsonl(path: Path, examples: Iterable[Example], scored: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for question, image in examples:
            f.write(json.dumps(row(question, image, scored)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def vision_rows(rng: random.Random, count: int, image_dir: Path, prefix: str) -> list[Example]:
    """``count`` vision-heavy questions, the four tasks in turn, each on a freshly drawn picture."""
    image_dir.mkdir(parents=True, exist_ok=True)
    tasks = tuple(VISION_PROMPTS)
    out = []
    for i in range(count):
        path = image_dir / f"{prefix}_{i:05d}.png"
        image, question = draw_vision_question(rng, tasks[i % len(tasks)])
        image.save(path)
        out.append((question, str(path.resolve())))
    rng.shuffle(out)
    return out


def language_rows(
    rng: random.Random, world: World, count: int, image_dir: Path, prefix: str, with_image: float, noise: float = 0.0
) -> list[Example]:
    """``count`` training-phrasing questions about the facts; a share ``with_image`` next to an unrelated picture.

    ``noise``: the share of answers replaced by another answer of the same relation (labels that disagree with
    what the original LM knows, as fine-tuning data written by others does).
    """
    image_dir.mkdir(parents=True, exist_ok=True)
    pool = world.questions("train")
    out: list[Example] = []
    for i in range(count):
        question = rng.choice(pool)
        if rng.random() < noise:
            wrong = sorted(set(world.answers(question.task)) - {question.answer})
            question = replace(question, answer=rng.choice(wrong))
        image = None
        if rng.random() < with_image:
            path = image_dir / f"{prefix}_{i:05d}.png"
            draw_distractor(rng).save(path)
            image = str(path.resolve())
        out.append((question, image))
    return out
