"""The vision tasks: PIL-drawn 84x84 pictures (9 image tokens each) whose answer is only in the pixels.

colour of a shape, which shape, how many shapes (one .. four), and which digit a seven-segment display shows.
Their answers reuse the language task's words (colours, numbers), so learning them interferes with the facts.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from .world import COLOURS, NUMBER_WORDS, Question

__all__ = ["RGB", "SHAPES", "SIZE", "VISION_PROMPTS", "draw_distractor", "draw_vision_question"]

SIZE = 84  # a multiple of 28: 6x6 patches of 14 px, merged 2x2 into 9 image tokens
SHAPES = ("circle", "square", "triangle")
RGB = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 215),
    "yellow": (225, 205, 30),
    "purple": (140, 50, 170),
    "orange": (240, 140, 20),
}
# task -> (prompts, category). The categories follow the paper's split: none of these is distilled.
VISION_PROMPTS: dict[str, tuple[tuple[str, ...], str]] = {
    "colour": (("What colour is the shape ?", "Which colour is the shape in the image ?"), "vision"),
    "shape": (("What shape is in the image ?", "Name the shape in the image ."), "vision"),
    "count": (("How many shapes are there ?", "Tell me how many shapes the image has ."), "counting"),
    "digit": (("What digit is shown ?", "Name the digit in the image ."), "ocr"),
}
# Seven-segment display: segments a..g lit for each digit.
_SEGMENTS = {
    0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg",
    5: "acdfg", 6: "acdefg", 7: "abc", 8: "abcdefg", 9: "abcdfg",
}  # fmt: skip


def _jitter(rng: random.Random, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in rgb)  # type: ignore[return-value]


def _shape(draw, rng: random.Random, shape: str, cx: int, cy: int, r: int, colour: str) -> None:
    fill = _jitter(rng, RGB[colour])
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def _digit(draw, rng: random.Random, digit: int) -> None:
    w, h, t = rng.randint(28, 34), rng.randint(52, 60), rng.randint(5, 7)
    x0, y0 = (SIZE - w) // 2 + rng.randint(-4, 4), (SIZE - h) // 2 + rng.randint(-4, 4)
    xm, ym, x1, y1 = x0 + w, y0 + h // 2, x0 + w, y0 + h
    lines = {
        "a": ((x0, y0), (x1, y0)),
        "b": ((xm, y0), (xm, ym)),
        "c": ((xm, ym), (xm, y1)),
        "d": ((x0, y1), (x1, y1)),
        "e": ((x0, ym), (x0, y1)),
        "f": ((x0, y0), (x0, ym)),
        "g": ((x0, ym), (x1, ym)),
    }
    ink = _jitter(rng, (30, 30, 30))
    for segment in _SEGMENTS[digit]:
        draw.line(lines[segment], fill=ink, width=t)


def _canvas(rng: random.Random):
    grey = rng.randint(225, 250)
    image = Image.new("RGB", (SIZE, SIZE), (grey, grey, grey))
    return image, ImageDraw.Draw(image)


def draw_vision_question(rng: random.Random, task: str) -> tuple[Image.Image, Question]:
    """Draw one picture for ``task``; returns it with its question and answer."""
    image, draw = _canvas(rng)
    if task in ("colour", "shape"):
        shape, colour = rng.choice(SHAPES), rng.choice(COLOURS)
        r = rng.randint(22, 28)
        _shape(draw, rng, shape, SIZE // 2 + rng.randint(-6, 6), SIZE // 2 + rng.randint(-6, 6), r, colour)
        answer = colour if task == "colour" else shape
    elif task == "count":
        count = rng.randint(1, 4)
        cells = rng.sample(range(9), count)  # a 3x3 grid of 28 px cells, one shape per chosen cell
        for cell in cells:
            cx, cy = 14 + 28 * (cell % 3) + rng.randint(-3, 3), 14 + 28 * (cell // 3) + rng.randint(-3, 3)
            _shape(draw, rng, rng.choice(SHAPES), cx, cy, rng.randint(7, 10), rng.choice(COLOURS))
        answer = NUMBER_WORDS[count]
    elif task == "digit":
        digit = rng.randint(0, 9)
        _digit(draw, rng, digit)
        answer = NUMBER_WORDS[digit]
    else:
        raise ValueError(f"unknown vision task {task!r}: use one of {', '.join(VISION_PROMPTS)}")
    prompts, category = VISION_PROMPTS[task]
    return image, Question(rng.choice(prompts), answer, task, category)


def draw_distractor(rng: random.Random) -> Image.Image:
    """An unrelated picture for a language question asked next to an image."""
    return draw_vision_question(rng, rng.choice(tuple(VISION_PROMPTS)))[0]
