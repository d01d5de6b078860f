"""The language task: facts about invented countries plus small sums, asked in templated phrasings.

Every relation has phrasings used for training and phrasings held out for the test; the held-out ones reuse
only words the training phrasings contain, so answering them needs the fact, not a new word. Answers share
words with the vision tasks (colours, numbers), which is where multimodal fine-tuning interferes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .vocab import words_of

__all__ = ["COLOURS", "NUMBER_WORDS", "PHRASINGS", "Question", "World", "answer_text", "make_world"]

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
)  # fmt: skip
MAX_RIVERS = 4  # rivers are counted in the words the counting images use (one .. four)

# relation -> (training phrasings, held-out phrasings); {e} is the country, {a} {b} the summands.
PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "capital": (
        (
            "What is the capital of {e} ?",
            "Which city is the capital of {e} ?",
            "Name the capital of {e} .",
            "Tell me the capital city of {e} .",
            "{e} has its capital in which city ?",
        ),
        ("What city is the capital of {e} ?", "Which is the capital city of {e} ?"),
    ),
    "flag": (
        (
            "What colour is the flag of {e} ?",
            "Which colour is the flag of {e} ?",
            "Name the colour of the flag of {e} .",
            "Tell me the flag colour of {e} .",
            "{e} has a flag of which colour ?",
        ),
        ("What is the colour of the flag of {e} ?", "Name the flag colour of {e} ."),
    ),
    "rivers": (
        (
            "How many rivers does {e} have ?",
            "What is the number of rivers in {e} ?",
            "Tell me how many rivers {e} has .",
            "Name the number of rivers of {e} .",
            "{e} has how many rivers ?",
        ),
        ("What number of rivers does {e} have ?", "Tell me the number of rivers in {e} ."),
    ),
    "sum": (
        (
            "What is {a} plus {b} ?",
            "Add {a} and {b} .",
            "Tell me the sum of {a} and {b} .",
            "{a} plus {b} is what number ?",
            "Name the sum of {a} and {b} .",
        ),
        ("What is the sum of {a} and {b} ?", "Which number is {a} plus {b} ?"),
    ),
}
FACT_RELATIONS = ("capital", "flag", "rivers")
CATEGORY = {"capital": "knowledge", "flag": "knowledge", "rivers": "knowledge", "sum": "text"}


@dataclass(frozen=True)
class Question:
    """One question with its one-word answer; ``category`` is the row's tag for selective distillation."""

    prompt: str
    answer: str
    task: str
    category: str


def answer_text(answer: str) -> str:
    """The assistant's reply: the answer word and a full stop (the vision tasks answer the same way)."""
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
    """Invented countries, each with a capital, a flag colour and a number of rivers."""

    countries: tuple[str, ...]
    capital: dict[str, str]
    flag: dict[str, str]
    rivers: dict[str, int]

    def facts(self, relation: str) -> list[tuple[dict[str, str], str]]:
        """(fields for the phrasing, answer word) for every fact of one relation."""
        if relation == "sum":
            return [
                ({"a": NUMBER_WORDS[a], "b": NUMBER_WORDS[b]}, NUMBER_WORDS[a + b])
                for a in range(10)
                for b in range(10)
            ]
        values = {
            "capital": self.capital,
            "flag": self.flag,
            "rivers": {c: NUMBER_WORDS[n] for c, n in self.rivers.items()},
        }
        return [({"e": c}, values[relation][c]) for c in self.countries]

    def answers(self, relation: str) -> list[str]:
        """Every answer ``relation`` can have (for labels that disagree with the facts)."""
        if relation == "sum":
            return list(NUMBER_WORDS)
        return sorted({answer for _, answer in self.facts(relation)} | (set(COLOURS) if relation == "flag" else set()))

    def questions(self, split: str, relations: tuple[str, ...] = (*FACT_RELATIONS, "sum")) -> list[Question]:
        """Every fact in every phrasing of ``split`` ('train' or 'test' = held-out phrasings)."""
        index = {"train": 0, "test": 1}[split]
        out = []
        for relation in relations:
            for fields, answer in self.facts(relation):
                for phrasing in PHRASINGS[relation][index]:
                    out.append(Question(phrasing.format(**fields), answer, relation, CATEGORY[relation]))
        return out

    def texts(self) -> list[str]:
        """Every question and answer, for the vocabulary."""
        return [
            t for split in ("train", "test") for q in self.questions(split) for t in (q.prompt, answer_text(q.answer))
        ]


def make_world(seed: int, countries: int = 24) -> World:
    """A world drawn from ``seed``: names, capitals, flag colours and river counts."""
    rng = random.Random(f"world-{seed}")
    taken = {w.lower() for w in words_of(p for pair in PHRASINGS.values() for group in pair for p in group)}
    taken |= set(COLOURS) | set(NUMBER_WORDS)
    names = _names(rng, countries, ("ia", "or", "an", "esh"), taken)
    cities = _names(rng, countries, ("m", "l", "th", "ro", "ne"), taken)
    world = World(
        countries=tuple(names),
        capital=dict(zip(names, cities, strict=True)),
        flag={c: rng.choice(COLOURS) for c in names},
        rivers={c: rng.randint(1, MAX_RIVERS) for c in names},
    )
    _check_heldout_words(world)
    return world


def _check_heldout_words(world: World) -> None:
    """Held-out phrasings must be new combinations of trained words, never new words."""
    trained = words_of(q.prompt for q in world.questions("train"))
    unseen = words_of(q.prompt for q in world.questions("test")) - trained
    if unseen:
        raise ValueError(f"held-out phrasings use words no training phrasing has: {sorted(unseen)}")
