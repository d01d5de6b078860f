"""The knowledge the original LM holds: invented countries, their capitals and flag colours, and small sums.

Countries are split per flag colour into *seen* ones (the recovery data may mention them) and *held-out* ones
(never in any recovery row, neither as a question nor as a label): held-out facts are the primary evaluation.
Every question has two phrasings, both in the LM's pre-training: phrasing 0 is the one recovery rows use,
phrasing 1 the one every evaluation uses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "COLOURS",
    "NUMBER_WORDS",
    "PHRASINGS",
    "SHAPES",
    "Question",
    "World",
    "answer_text",
    "make_world",
]

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle")
NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
)  # fmt: skip
ADDENDS = (1, 2, 3)  # "the digit plus k"

# relation -> (phrasing 0: recovery rows, phrasing 1: evaluation); {e} country, {city}, {c} colour, {a} {b} numbers
PHRASINGS: dict[str, tuple[str, str]] = {
    "capital": ("What is the capital of {e} ?", "Which city is the capital of {e} ?"),
    "flag": ("What colour is the flag of {e} ?", "Which colour is the flag of {e} ?"),
    "country_of": ("Which country has the capital {city} ?", "{city} is the capital of which country ?"),
    "flag_any": ("Name a country whose flag is {c} .", "Which country has a {c} flag ?"),
    "sum": ("What is {a} plus {b} ?", "Which number is {a} plus {b} ?"),
}
# The sentence an image stands for, and the questions asked after it (the same words with the picture instead).
CONTEXT = {"shape": "There is a {c} {s} .", "digit": "The digit is {d} ."}
PICTURE_QUESTIONS = {
    "colour": "What colour is the shape ?",
    "shape": "What shape is it ?",
    "digit": "What digit is shown ?",
    "count": "How many shapes are there ?",
    "flag_of_shape": "Name a country whose flag has the colour of the shape .",
    "digit_plus": "What is the digit plus {k} ?",
}


@dataclass(frozen=True)
class Question:
    """A prompt, one label, and every answer that counts as right (several for several-answer questions)."""

    prompt: str
    answer: str
    task: str
    category: str  # the row's tag for selective distillation (paper's split)
    valid: tuple[str, ...] = ()
    item: str = ""  # a stable id of what is asked (the same fact in every arm and unit), for paired statistics
    # Scored by rank instead of argmax: right when ``answer`` is among the ``within`` most likely of ``rank_among``
    # (the several-answer coverage check: is each right answer still among the top |right answers|?).
    rank_among: tuple[str, ...] = ()
    within: int = 1

    @property
    def answers(self) -> tuple[str, ...]:
        return self.valid or (self.answer,)


def answer_text(answer: str) -> str:
    """The assistant's reply: the answer word and a full stop."""
    return f"{answer} ."


def _names(rng: random.Random, count: int, endings: tuple[str, ...], taken: set[str]) -> list[str]:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    names: list[str] = []
    while len(names) < count:
        syllables = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 2)))
        name = (syllables + rng.choice(endings)).capitalize()
        if name.lower() not in taken:
            taken.add(name.lower())
            names.append(name)
    return names


@dataclass(frozen=True)
class World:
    """Countries with a capital and a flag colour; per colour, the first ``seen_per_colour`` are seen."""

    countries: tuple[str, ...]
    capital: dict[str, str]
    flag: dict[str, str]
    seen: frozenset[str]

    @property
    def held_out(self) -> tuple[str, ...]:
        return tuple(c for c in self.countries if c not in self.seen)

    def with_flag(self, colour: str, among: tuple[str, ...] | None = None) -> tuple[str, ...]:
        return tuple(c for c in (among or self.countries) if self.flag[c] == colour)

    def fact(self, relation: str, key: str, phrasing: int) -> Question:
        """One single-answer fact about country ``key`` (capital, flag, country_of)."""
        text = PHRASINGS[relation][phrasing]
        if relation == "capital":
            return Question(text.format(e=key), self.capital[key], relation, "knowledge", item=f"capital:{key}")
        if relation == "flag":
            return Question(text.format(e=key), self.flag[key], relation, "knowledge", item=f"flag:{key}")
        if relation == "country_of":
            city = self.capital[key]
            return Question(text.format(city=city), key, relation, "knowledge", item=f"country_of:{key}")
        raise ValueError(f"unknown relation {relation!r}")

    def flag_any(self, colour: str, label: str, phrasing: int, valid: tuple[str, ...] | None = None) -> Question:
        """'Name a country whose flag is red .': every red-flag country is right; ``label`` names one."""
        valid = valid or self.with_flag(colour)
        prompt = PHRASINGS["flag_any"][phrasing].format(c=colour)
        return Question(prompt, label, "flag_any", "knowledge", valid, item=f"flag_any:{colour}")

    def coverage(self, colour: str, country: str) -> Question:
        """Is ``country`` (flag ``colour``) among the student's top-k countries after 'Which country has a
        {colour} flag ?', k = the number of right answers? The label-only recovery trains one answer per row."""
        valid = self.with_flag(colour)
        prompt = PHRASINGS["flag_any"][1].format(c=colour)
        task = "flag_any_seen" if country in self.seen else "flag_any_held_out"
        return Question(prompt, country, task, "knowledge", item=f"flag_any:{colour}:{country}",
                        rank_among=self.countries, within=len(valid))  # fmt: skip

    def vocabulary(self) -> list[str]:
        """Every word the questions and answers can use."""
        words = [*self.countries, *self.capital.values(), *COLOURS, *SHAPES, *NUMBER_WORDS]
        for text in (*PHRASINGS.values(), CONTEXT.values(), PICTURE_QUESTIONS.values()):
            for template in text:
                words += template.replace("{", " ").replace("}", " ").split()
        return sorted(set(words))


def make_world(seed: int, per_colour: int = 6, seen_per_colour: int = 3) -> World:
    """``per_colour`` countries per flag colour (balanced), names and capitals drawn from ``seed``."""
    rng = random.Random(f"world-{seed}")
    taken = {w.lower() for w in (*COLOURS, *SHAPES, *NUMBER_WORDS)}
    for text in (*PHRASINGS.values(), CONTEXT.values(), PICTURE_QUESTIONS.values()):
        for template in text:
            taken |= {w.lower() for w in template.split()}
    count = per_colour * len(COLOURS)
    names = _names(rng, count, ("ia", "or", "an", "esh"), taken)
    cities = _names(rng, count, ("m", "l", "th", "ro", "ne"), taken)
    flags = [COLOURS[i % len(COLOURS)] for i in range(count)]
    rng.shuffle(flags)
    flag = dict(zip(names, flags, strict=True))
    seen = set()
    for colour in COLOURS:
        seen |= set([c for c in names if flag[c] == colour][:seen_per_colour])
    return World(tuple(names), dict(zip(names, cities, strict=True)), flag, frozenset(seen))
