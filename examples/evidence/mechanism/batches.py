"""Rows encoded once by swift's own template and batched by swift's own collator (what ``swift sft`` trains on).

A batch keeps the swift rows it came from, so each arm can write its own tags into swift's ``channel`` column
(the plugin's tagger decides, as its dataset preprocessor does inside ``swift sft``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .data import Sample, swift_row
from .template import check_image_tokens

__all__ = ["Batch", "Encoded", "Encoder"]


@dataclass
class Encoded:
    sample: Sample
    row: dict[str, Any]  # the swift row (messages, images, category)
    tokens: dict[str, Any]  # swift's template.encode(row)


@dataclass
class Batch:
    rows: list[Encoded]
    inputs: dict[str, Any]  # swift's collated batch (channel filled by ``tagged``)

    def tagged(self, channel: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
        """The collated batch with each row's ``channel`` as the plugin's tagger writes it."""
        return {**self.inputs, "channel": [channel(e.row) for e in self.rows]}


class Encoder:
    """swift's template (training mode) bound to a model, for encoding and collating."""

    def __init__(self, template: Any) -> None:
        self.template = template
        self.tokenizer = template.tokenizer
        self._merge = template.processor.image_processor.merge_size
        self._word_ids: dict[str, int] = {}

    def encode(self, samples: Sequence[Sample]) -> list[Encoded]:
        out = []
        for sample in samples:
            row = swift_row(sample)
            tokens = self.template.encode(row)
            check_image_tokens(tokens["input_ids"], tokens.get("image_grid_thw"), self._merge)
            out.append(Encoded(sample, row, tokens))
        return out

    def collate(self, encoded: Sequence[Encoded]) -> Batch:
        inputs = self.template.data_collator([dict(e.tokens) for e in encoded])
        inputs.pop("channel", None)
        return Batch(list(encoded), inputs)

    def word_id(self, word: str) -> int:
        """The single token of an answer word (the tokenizer makes every word one token)."""
        if word not in self._word_ids:
            ids = self.tokenizer.encode(word, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"answer word {word!r} is {len(ids)} tokens; every answer must be one token")
            self._word_ids[word] = ids[0]
        return self._word_ids[word]

    def answer_positions(self, batch: Batch) -> torch.Tensor:
        """[B, L] bool: the position whose logits predict each row's answer word (the first supervised token)."""
        labels = batch.inputs["labels"]
        first = (labels != -100).int().argmax(dim=1)  # [B]
        mask = torch.zeros_like(labels, dtype=torch.bool)
        mask[torch.arange(labels.shape[0]), first - 1] = True
        return mask
