"""The Idefics3 test cases: tiny students built from a tiny Llama 3 LM, batches laid out as swift's ``idefics3``
template lays them out (``<|begin_of_text|>User:...<end_of_utterance>\\nAssistant:`` + answer + suffix)."""

from __future__ import annotations

import torch

from tests.support.harness import FamilyCase, train_like_swift
from tests.support.tiny.idefics3 import (
    END_OF_UTTERANCE,
    IDEFICS3_SIZE,
    IDEFICS3_VOCAB,
    make_idefics3,
    make_idefics3_processor,
    make_llama3_lm,
)
from tests.support.vl_batches import image

NAME = "idefics3"
# swift's idefics3 batch: no position_ids (LlamaModel counts the sequence index), a pixel mask from transformers.
FORWARD_KEYS = ("input_ids", "attention_mask", "pixel_values", "pixel_attention_mask")

# (user turn with <image> placeholders, answer, image sizes): 56x56 -> 2x2 tiles + global (5 tiles),
# 112x56 -> 1x2 + global (3), 56x112 -> 2x1 + global (3); 4 <image> tokens a tile.
SAMPLES: tuple[tuple[str, str, tuple[tuple[int, int], ...]], ...] = (
    ("<image>Compare<image>these.", "The first is red, the second is green, both are squares.", ((56, 56), (112, 56))),
    ("Tell me a short story about a cat who learns to read.", "Once upon a time a cat found a book.", ()),
    ("<image>What colour is this?", "Blue.", ((56, 112),)),
)


def swift_prompt(query: str) -> str:
    """The user turn as swift's idefics3 template writes it (prefix, prompt; the answer follows directly)."""
    return f"<|begin_of_text|>User:{query}{END_OF_UTTERANCE}\nAssistant:"


def make_idefics3_batch(processor, images_seed: int = 0, samples=SAMPLES) -> dict:
    """Right-padded rows; labels on the answer and its ``<end_of_utterance>``; tiles padded per row as HF does."""
    tokenizer = processor.tokenizer
    rows, labels, pixels, pixel_masks = [], [], [], []
    for index, (query, answer, sizes) in enumerate(samples):
        row_images = [image(size, index + k, images_seed + 10 * index + k) for k, size in enumerate(sizes)]
        prompt = processor(text=swift_prompt(query), images=[row_images] if row_images else None, return_tensors="pt")
        answer_ids = tokenizer(answer + END_OF_UTTERANCE, add_special_tokens=False, return_tensors="pt").input_ids[0]
        prompt_ids = prompt["input_ids"][0]
        rows.append(torch.cat([prompt_ids, answer_ids]))
        labels.append(torch.cat([torch.full_like(prompt_ids, -100), answer_ids]))
        if row_images:
            pixels.append(prompt["pixel_values"][0])  # [tiles, 3, 56, 56]
            pixel_masks.append(prompt["pixel_attention_mask"][0])  # [tiles, 56, 56]
        else:
            pixels.append(torch.zeros(0, 3, 56, 56))
            pixel_masks.append(torch.zeros(0, 56, 56, dtype=torch.long))
    length = max(len(r) for r in rows)
    tiles = max(len(p) for p in pixels)
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.stack([torch.cat([r, r.new_full((length - len(r),), pad)]) for r in rows]),  # [B, L]
        "labels": torch.stack([torch.cat([r, r.new_full((length - len(r),), -100)]) for r in labels]),  # [B, L]
        "attention_mask": torch.stack([torch.arange(length) < len(r) for r in rows]).long(),  # [B, L]
        # [B, tiles, 3, 56, 56]: all-zero padding tiles, which the model drops (as the HF processor pads)
        "pixel_values": torch.stack([torch.cat([p, p.new_zeros(tiles - len(p), *p.shape[1:])]) for p in pixels]),
        "pixel_attention_mask": torch.stack(
            [torch.cat([m, m.new_zeros(tiles - len(m), *m.shape[1:])]) for m in pixel_masks]
        ),  # [B, tiles, 56, 56]
    }


def idefics3_case(student_tokenizer, perturb: float = 0.5, other_seed: int = 1) -> FamilyCase:
    """A tiny Idefics3 student built from ``make_llama3_lm(seed=0)``, then perturbed.

    Both LMs have the student's 128259 rows, so the plain teacher forward of invariant 2 can read the text-only
    row's ``<end_of_utterance>``; the e2e tests use a 128256-row teacher as Llama-3.1 has.
    """
    lm = make_llama3_lm(IDEFICS3_SIZE, seed=0, vocab=IDEFICS3_VOCAB)
    student = train_like_swift(make_idefics3(IDEFICS3_SIZE, seed=0, lm=lm, perturb=perturb))
    processor = make_idefics3_processor(student_tokenizer)
    return FamilyCase(
        name=NAME,
        student=student,
        other_teacher=make_llama3_lm(IDEFICS3_SIZE, seed=other_seed, vocab=IDEFICS3_VOCAB),
        build_batch=lambda images_seed=0: make_idefics3_batch(processor, images_seed),
        forward_keys=FORWARD_KEYS,
    )
