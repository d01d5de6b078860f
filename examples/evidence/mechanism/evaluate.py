"""Scoring: the answer word is right when the argmax at its position is one of the question's right answers.

That is what greedy decoding would say first (every answer is one token). Rows are encoded and batched by
swift's template, as in training. The same scorer reads a student's logits or a teacher's (the gate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .batches import Batch, Encoded, Encoder

__all__ = ["EvalSet", "Scores", "score", "student_logits"]

LogitsAt = Callable[[Batch, torch.Tensor], torch.Tensor]  # (batch, positions [B, L]) -> [B, V]


@dataclass
class EvalSet:
    """A named list of encoded rows, batched once."""

    name: str
    batches: list[Batch]

    @classmethod
    def of(cls, name: str, encoded: Sequence[Encoded], encoder: Encoder, batch_size: int = 64) -> EvalSet:
        chunks = [encoded[i : i + batch_size] for i in range(0, len(encoded), batch_size)]
        return cls(name, [encoder.collate(chunk) for chunk in chunks])

    def __len__(self) -> int:
        return sum(len(b.rows) for b in self.batches)


@dataclass
class Scores:
    """Per-row correctness (in the set's fixed order) and the items they ask."""

    correct: list[bool]
    items: list[str]
    tasks: list[str]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct)

    def by_task(self) -> dict[str, float]:
        out: dict[str, list[bool]] = {}
        for task, ok in zip(self.tasks, self.correct, strict=True):
            out.setdefault(task, []).append(ok)
        return {task: sum(v) / len(v) for task, v in sorted(out.items())}


def student_logits(model: torch.nn.Module) -> LogitsAt:
    """A student's logits at the answer positions (one eval-mode forward, as swift's template feeds it)."""

    def at(batch: Batch, positions: torch.Tensor) -> torch.Tensor:
        inputs = {k: v for k, v in batch.inputs.items() if k not in ("labels", "channel", "text_position_ids")}
        with torch.no_grad():
            logits = model(**inputs).logits  # [B, L, V]
        return logits[positions]

    return at


def score(eval_set: EvalSet, encoder: Encoder, logits_at: LogitsAt) -> Scores:
    """Correctness of every row of ``eval_set`` under ``logits_at``."""
    correct, items, tasks = [], [], []
    for batch in eval_set.batches:
        positions = encoder.answer_positions(batch)
        logits = logits_at(batch, positions)  # [B, V] in row order
        predicted = logits.argmax(dim=-1).tolist()
        for row, (encoded, guess) in enumerate(zip(batch.rows, predicted, strict=True)):
            question = encoded.sample.question
            if question.rank_among:
                candidates = logits[row, [encoder.word_id(c) for c in question.rank_among]]
                above = int((candidates > logits[row, encoder.word_id(question.answer)]).sum())
                correct.append(above < question.within)
            else:
                correct.append(guess in {encoder.word_id(a) for a in question.answers})
            items.append(question.item)
            tasks.append(question.task)
    return Scores(correct, items, tasks)
