"""Accuracy of a checkpoint on a test set: the answer word is right when greedy decoding would produce it.

Rows are encoded by swift's own template (``template.load_template``), batched with right padding, and scored
with teacher forcing: the answer is correct when the argmax at each of its tokens is that token (exactly what
greedy decoding would emit). The mean negative log-likelihood of the answer is kept too.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .template import IMAGE_TOKEN_ID, check_image_tokens, load_template
from .vocab import PAD_TOKEN_ID

__all__ = ["Score", "collate", "load_model", "score_rows"]

IGNORE = -100


@dataclass
class Score:
    """Accuracy and answer NLL on one test set, overall and per task."""

    accuracy: float
    nll: float
    count: int
    by_task: dict[str, float] = field(default_factory=dict)


def load_model(model_dir: str | Path) -> torch.nn.Module:
    """The LM or the VLM of a checkpoint folder, in float32 and eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen2_5_VLForConditionalGeneration

    config = AutoConfig.from_pretrained(model_dir)
    cls = Qwen2_5_VLForConditionalGeneration if config.model_type == "qwen2_5_vl" else AutoModelForCausalLM
    return cls.from_pretrained(model_dir, dtype=torch.float32).eval()


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def collate(encoded: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels``, ``mm_token_type_ids`` and the images' pixels."""
    ids = [list(e["input_ids"]) for e in encoded]
    batch = {
        "input_ids": _pad(ids, PAD_TOKEN_ID),
        "attention_mask": _pad([[1] * len(i) for i in ids], 0),
        "labels": _pad([list(e["labels"]) for e in encoded], IGNORE),
        "mm_token_type_ids": _pad([[int(t == IMAGE_TOKEN_ID) for t in i] for i in ids], 0),
    }
    with_images = [e for e in encoded if e.get("image_grid_thw") is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([e["pixel_values"] for e in with_images])
        batch["image_grid_thw"] = torch.cat([e["image_grid_thw"] for e in with_images])
    return batch


@torch.no_grad()
def score_rows(model: torch.nn.Module, template: Any, rows: list[dict[str, Any]], batch_size: int = 32) -> Score:
    """Teacher-forced greedy accuracy and NLL of each row's ``answer`` word (rows from ``data.row(scored=True)``)."""
    accepted = set(inspect.signature(model.forward).parameters)
    tokenizer = template.tokenizer
    merge = getattr(getattr(template.processor, "image_processor", None), "merge_size", 1)
    right: dict[str, list[bool]] = defaultdict(list)
    nll_total, correct_total = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        encoded = [template.encode(row) for row in chunk]
        for e in encoded:  # the image placeholders really became one token per merged patch
            check_image_tokens(e["input_ids"], e.get("image_grid_thw"), merge)
        batch = collate(encoded)
        labels = batch.pop("labels")
        logits = model(**{k: v for k, v in batch.items() if k in accepted}).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = labels[:, 1:]
        for i, row in enumerate(chunk):
            answer = tokenizer.encode(row["answer"], add_special_tokens=False)
            positions = (targets[i] != IGNORE).nonzero().flatten()[: len(answer)]
            gold = targets[i, positions]
            if gold.tolist() != answer:
                raise ValueError(
                    f"the first supervised tokens of {row['messages']} are not its answer {row['answer']!r}"
                )
            ok = bool((logprobs[i, positions].argmax(-1) == gold).all())
            right[row["task"]].append(ok)
            correct_total += ok
            nll_total -= float(logprobs[i, positions].gather(-1, gold[:, None]).sum())
    by_task = {task: sum(v) / len(v) for task, v in sorted(right.items())}
    return Score(correct_total / len(rows), nll_total / len(rows), len(rows), by_task)


def score_checkpoint(model_dir: str | Path, test_sets: dict[str, list[dict[str, Any]]]) -> dict[str, Score]:
    """Every test set scored on one checkpoint (template and model loaded once)."""
    template = load_template(model_dir)
    model = load_model(model_dir)
    return {name: score_rows(model, template, rows) for name, rows in test_sets.items()}
