"""The demo's small mixed dataset (PIL-drawn images; vision-heavy, language-heavy and text-only rows)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .common import write_jsonl
from .qwen import build_qwen2_lm, build_qwen_vl, qwen_tokenizer

__all__ = ["build_demo_assets", "build_demo_dataset", "build_monitor_set"]

_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
_SHAPES = ("circle", "square", "triangle")
_FACTS = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("Why is the sky blue?", "Air scatters blue light more than red light, so the sky looks blue."),
)

# Held out: never in the training rows, for `--callbacks lingudistill_monitor` (text-only, as the monitor requires).
_HELD_OUT_FACTS = (
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("How many days are there in a week?", "There are seven days in a week."),
    ("What do bees make?", "Bees make honey."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("How many continents are there?", "There are seven continents."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
)


def build_monitor_set(out_dir: str | Path) -> Path:
    """The held-out text-only rows (swift's ``messages`` format) the monitor measures language on."""
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in _HELD_OUT_FACTS
    ]
    return write_jsonl(Path(out_dir) / "monitor_text.jsonl", rows)


def _draw(path: Path, shape: str, colour: str, count: int, digit: str | None, size: tuple[int, int]) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (245, 245, 245))
    draw = ImageDraw.Draw(image)
    w, h = size
    for i in range(count):
        cx = int((i + 0.5) * w / count)
        r = max(4, min(w // (2 * count), h // 3) - 2)
        box = (cx - r, h // 2 - r, cx + r, h // 2 + r)
        fill = _COLOURS[colour]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, h // 2 - r), (cx - r, h // 2 + r), (cx + r, h // 2 + r)], fill=fill)
    if digit is not None:
        draw.text((4, 2), digit, fill=(0, 0, 0))
    image.save(path)


def build_demo_dataset(out_dir: str | Path, rows: int = 24, seed: int = 0) -> Path:
    """A small mixed JSONL in swift's ``messages`` + ``images`` format; returns the file's path.

    About a third of the rows are vision-heavy (reading a digit, counting, colours of shapes), a third
    language-heavy with an image (a general question next to an unrelated picture), a third text-only.
    A few rows carry an explicit ``distill`` field or a ``category`` so every tagging rule is exercised.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sizes = [(56, 56), (84, 56), (56, 84)]
    records = []
    for i in range(rows):
        kind = i % 3
        shape, colour = rng.choice(_SHAPES), rng.choice(sorted(_COLOURS))
        count, digit = rng.randint(1, 3), str(rng.randint(0, 9))
        question, answer = _FACTS[i % len(_FACTS)]
        record: dict[str, Any] = {}
        if kind == 2:  # text-only, language-heavy
            record["messages"] = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        else:
            path = image_dir / f"img_{i:03d}.png"
            _draw(path, shape, colour, count, digit, rng.choice(sizes))
            record["images"] = [str(path.resolve())]
            if kind == 0:  # vision-heavy: the answer is in the pixels
                vision_tasks = (
                    (f"<image>How many {shape}s are there in the image?", f"There are {count}."),
                    ("<image>Read the digit written in the top-left corner.", f"The digit is {digit}."),
                    (f"<image>What color is the {shape}?", f"It is {colour}."),
                )
                q, a = vision_tasks[(i // 3) % len(vision_tasks)]
            else:  # language-heavy: the image is context, the answer is knowledge and language
                q, a = f"<image>{question}", answer
            record["messages"] = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        if i % 8 == 5:
            record["category"] = "captioning" if kind != 0 else "counting"
        if i % 12 == 7:
            record["distill"] = kind != 0
        records.append(record)
    return write_jsonl(out_dir / "demo.jsonl", records)


def build_demo_assets(root: str | Path, family: str = "qwen2_5_vl", perturb: float = 0.5, seed: int = 0) -> dict:
    """Everything the demo needs: the original LM, the degraded VLM built from it, the dataset and the monitor's
    held-out text."""
    root = Path(root)
    tokenizer = qwen_tokenizer()
    lm = build_qwen2_lm(root / "original_lm", seed=seed, tokenizer=tokenizer)
    vlm = build_qwen_vl(
        root / "degraded_vlm", family=family, lm_dir=lm, perturb=perturb, seed=seed, tokenizer=tokenizer
    )
    data = build_demo_dataset(root / "data", seed=seed)
    return {"teacher": lm, "student": vlm, "dataset": data, "monitor": build_monitor_set(root / "data")}
