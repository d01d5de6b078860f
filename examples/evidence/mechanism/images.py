"""PIL-drawn 56x56 pictures (4 image tokens each): one coloured shape, several shapes, or a seven-segment digit.

What a picture shows is returned with it, so every question about it has a known answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from .world import COLOURS, SHAPES

__all__ = ["RGB", "SIZE", "Picture", "draw_count", "draw_digit", "draw_shape"]

SIZE = 56  # a multiple of 28: 4x4 patches of 14 px, merged 2x2 into 4 image tokens
RGB = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 215),
    "yellow": (225, 205, 30),
    "purple": (140, 50, 170),
    "orange": (240, 140, 20),
}
_SEGMENTS = {
    0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg",
    5: "acdfg", 6: "acdefg", 7: "abc", 8: "abcdefg", 9: "abcdfg",
}  # fmt: skip


@dataclass(frozen=True)
class Picture:
    """A drawn picture and what it shows (colour and shape, a count, or a digit)."""

    image: Image.Image
    kind: str  # shape | count | digit
    colour: str = ""
    shape: str = ""
    number: int = 0


def _jitter(rng: random.Random, rgb: tuple[int, int, int], by: int = 20) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-by, by))) for c in rgb)  # type: ignore[return-value]


def _canvas(rng: random.Random) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    grey = rng.randint(225, 250)
    image = Image.new("RGB", (SIZE, SIZE), (grey, grey, grey))
    return image, ImageDraw.Draw(image)


def _shape(draw, rng: random.Random, shape: str, cx: int, cy: int, r: int, colour: str) -> None:
    fill = _jitter(rng, RGB[colour])
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def draw_shape(rng: random.Random, colour: str | None = None, shape: str | None = None) -> Picture:
    """One shape of one colour near the centre."""
    colour = colour or rng.choice(COLOURS)
    shape = shape or rng.choice(SHAPES)
    image, draw = _canvas(rng)
    r = rng.randint(14, 19)
    _shape(draw, rng, shape, SIZE // 2 + rng.randint(-4, 4), SIZE // 2 + rng.randint(-4, 4), r, colour)
    return Picture(image, "shape", colour=colour, shape=shape)


def draw_count(rng: random.Random, count: int | None = None) -> Picture:
    """One to four small shapes of random colours, one per cell of a 2x2 grid."""
    count = count or rng.randint(1, 4)
    image, draw = _canvas(rng)
    for cell in rng.sample(range(4), count):
        cx, cy = 14 + 28 * (cell % 2) + rng.randint(-2, 2), 14 + 28 * (cell // 2) + rng.randint(-2, 2)
        _shape(draw, rng, rng.choice(SHAPES), cx, cy, rng.randint(6, 9), rng.choice(COLOURS))
    return Picture(image, "count", number=count)


def draw_digit(rng: random.Random, digit: int | None = None) -> Picture:
    """A seven-segment digit in dark ink."""
    digit = rng.randint(0, 9) if digit is None else digit
    image, draw = _canvas(rng)
    w, h, t = rng.randint(20, 24), rng.randint(36, 42), rng.randint(4, 5)
    x0, y0 = (SIZE - w) // 2 + rng.randint(-3, 3), (SIZE - h) // 2 + rng.randint(-3, 3)
    x1, ym, y1 = x0 + w, y0 + h // 2, y0 + h
    lines = {
        "a": ((x0, y0), (x1, y0)),
        "b": ((x1, y0), (x1, ym)),
        "c": ((x1, ym), (x1, y1)),
        "d": ((x0, y1), (x1, y1)),
        "e": ((x0, ym), (x0, y1)),
        "f": ((x0, y0), (x0, ym)),
        "g": ((x0, ym), (x1, ym)),
    }
    ink = _jitter(rng, (30, 30, 30))
    for segment in _SEGMENTS[digit]:
        draw.line(lines[segment], fill=ink, width=t)
    return Picture(image, "digit", number=digit)
