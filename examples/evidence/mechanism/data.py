"""Every row the harness trains or measures on, as swift ``messages`` rows plus what is needed to score them.

Row kinds (``Question.task``) and their tag (``category``, the paper's split through the plugin's map):
- facts, text only: ``capital``, ``flag``, ``country_of``, ``sum`` (knowledge / text: distilled);
- several-answer, text only: ``flag_any`` ("Name a country whose flag is red ."; knowledge: distilled);
- image plus knowledge: ``flag_of_shape`` (a coloured shape -> a country whose flag has that colour) and
  ``digit_plus`` (a digit picture -> that number plus k) (knowledge: distilled);
- vision: ``colour``, ``shape`` (vision), ``count`` (counting), ``digit`` (ocr): not distilled.
The LM's pre-training also has each picture question after the sentence the picture stands for ("There is a
red circle . Name a country whose flag has the colour of the shape ."), so the LM knows how to compose it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from .images import Picture, draw_count, draw_digit, draw_shape
from .world import (
    ADDENDS,
    COLOURS,
    CONTEXT,
    NUMBER_WORDS,
    PHRASINGS,
    PICTURE_QUESTIONS,
    SHAPES,
    Question,
    World,
    answer_text,
)

__all__ = [
    "Sample",
    "lm_samples",
    "picture_question",
    "sum_pairs",
    "swift_row",
    "text_fact_samples",
]

VISION_CATEGORY = {"colour": "vision", "shape": "vision", "count": "counting", "digit": "ocr"}


@dataclass(frozen=True)
class Sample:
    """One row: a question, its picture (None: text only)."""

    question: Question
    picture: Picture | None = None


def swift_row(sample: Sample, image: Any = None) -> dict[str, Any]:
    """swift's ``messages`` row; ``image`` is the picture itself (in process) or its file path (JSONL)."""
    q = sample.question
    has_image = sample.picture is not None
    record: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": f"<image>{q.prompt}" if has_image else q.prompt},
            {"role": "assistant", "content": answer_text(q.answer)},
        ],
        "category": q.category,
    }
    if has_image:
        record["images"] = [image if image is not None else sample.picture.image]
    return record


def sum_pairs(world_seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The 100 sums a + b (a, b < 10) split in half: (seen in recovery, held out)."""
    pairs = [(a, b) for a in range(10) for b in range(10)]
    random.Random(f"sums-{world_seed}").shuffle(pairs)
    return sorted(pairs[:50]), sorted(pairs[50:])


def _sum(a: int, b: int, phrasing: int) -> Question:
    text = PHRASINGS["sum"][phrasing].format(a=NUMBER_WORDS[a], b=NUMBER_WORDS[b])
    return Question(text, NUMBER_WORDS[a + b], "sum", "text", item=f"sum:{a}+{b}")


def text_fact_samples(
    world: World, countries: tuple[str, ...], pairs: list[tuple[int, int]], phrasing: int
) -> list[Sample]:
    """Single-answer facts: capital, flag and country_of of ``countries``, and the sums ``pairs``."""
    out = [Sample(world.fact(r, c, phrasing)) for c in countries for r in ("capital", "flag", "country_of")]
    return out + [Sample(_sum(a, b, phrasing)) for a, b in pairs]


def picture_question(task: str, picture: Picture, world: World, label_from: tuple[str, ...] | None = None,
                     rng: random.Random | None = None, k: int = 1) -> Question:  # fmt: skip
    """The question ``task`` about ``picture``; for ``flag_of_shape`` the label is drawn from ``label_from``
    (default: every valid country), and every country with that flag colour counts as right."""
    prompt = PICTURE_QUESTIONS[task]
    if task == "colour":
        return Question(prompt, picture.colour, task, VISION_CATEGORY[task], item=f"colour:{picture.colour}")
    if task == "shape":
        return Question(prompt, picture.shape, task, VISION_CATEGORY[task], item=f"shape:{picture.shape}")
    if task in ("count", "digit"):
        word = NUMBER_WORDS[picture.number]
        return Question(prompt, word, task, VISION_CATEGORY[task], item=f"{task}:{picture.number}")
    if task == "flag_of_shape":
        valid = world.with_flag(picture.colour)
        pool = world.with_flag(picture.colour, label_from) if label_from else valid
        label = (rng or random.Random(0)).choice(pool)
        return Question(prompt, label, task, "knowledge", valid, item=f"flag_of_shape:{picture.colour}")
    if task == "digit_plus":
        answer = NUMBER_WORDS[picture.number + k]
        item = f"digit_plus:{picture.number}+{k}"
        return Question(prompt.format(k=NUMBER_WORDS[k]), answer, task, "knowledge", item=item)
    raise ValueError(f"unknown picture task {task!r}")


def draw_for(task: str, rng: random.Random) -> Picture:
    """A fresh picture for a picture task."""
    if task in ("colour", "shape", "flag_of_shape"):
        return draw_shape(rng)
    if task == "count":
        return draw_count(rng)
    return draw_digit(rng)


def picture_sample(task: str, rng: random.Random, world: World, label_from: tuple[str, ...] | None = None) -> Sample:
    picture = draw_for(task, rng)
    return Sample(picture_question(task, picture, world, label_from, rng, k=rng.choice(ADDENDS)), picture)


def _in_context(question: Question, context: str) -> Question:
    """The picture question after the sentence the picture stands for (for the LM's pre-training)."""
    return replace(question, prompt=f"{context} {question.prompt}")


def lm_samples(world: World, fact_repeats: int = 3) -> list[Sample]:
    """The original LM's pre-training rows: every fact in both phrasings (repeated), every several-answer
    question with each valid label, and every picture question after the sentence the picture stands for."""
    rows: list[Sample] = []
    facts = []
    for phrasing in (0, 1):
        facts += text_fact_samples(world, world.countries, [], phrasing)
        facts += [
            Sample(world.flag_any(colour, label, phrasing)) for colour in COLOURS for label in world.with_flag(colour)
        ]
    rows += facts * fact_repeats
    for phrasing in (0, 1):
        rows += [Sample(_sum(a, b, phrasing)) for a in range(10) for b in range(10)]
    for colour in COLOURS:
        for shape in SHAPES:
            context = CONTEXT["shape"].format(c=colour, s=shape)
            picture = Picture(image=None, kind="shape", colour=colour, shape=shape)  # type: ignore[arg-type]
            rows.append(Sample(_in_context(picture_question("colour", picture, world), context)))
            rows.append(Sample(_in_context(picture_question("shape", picture, world), context)))
            for label in world.with_flag(colour):
                q = picture_question("flag_of_shape", picture, world)
                rows.append(Sample(_in_context(replace(q, answer=label), context)))
    for digit in range(10):
        context = CONTEXT["digit"].format(d=NUMBER_WORDS[digit])
        picture = Picture(image=None, kind="digit", number=digit)  # type: ignore[arg-type]
        rows += [Sample(_in_context(picture_question("digit", picture, world), context))] * 2
        rows += [Sample(_in_context(picture_question("digit_plus", picture, world, k=k), context)) for k in ADDENDS]
    return rows
