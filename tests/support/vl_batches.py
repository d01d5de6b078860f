"""Tiny Qwen-VL batches for direct (in-process) tests: several images per sample, text-only rows, padding."""

from __future__ import annotations

import torch
from PIL import Image

ASSISTANT_START = [151644, 77091, 198]  # "<|im_start|>assistant\n"

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]


def image(size: tuple[int, int], colour_index: int = 0, seed: int = 0) -> Image.Image:
    """A PIL image with a little structure, so different images give different vision features."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 60, (size[1], size[0], 3), generator=gen, dtype=torch.uint8)
    base = torch.tensor(COLOURS[colour_index % len(COLOURS)], dtype=torch.uint8)
    pixels = (base[None, None] + noise).clamp(0, 255).numpy()
    return Image.fromarray(pixels, "RGB")


def conversations(images_seed: int = 0) -> tuple[list[list[dict]], list[list[Image.Image]]]:
    """Three samples: two images + text, text-only, one image; different lengths so the batch pads."""
    convs = [
        [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Compare"}, {"type": "image"}]},
            {"role": "assistant", "content": "The first is red, the second is green, both are squares."},
        ],
        [
            {"role": "user", "content": "Tell me a short story about a cat who learns to read."},
            {"role": "assistant", "content": "Once upon a time a cat found a book."},
        ],
        [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is this?"}]},
            {"role": "assistant", "content": "Blue."},
        ],
    ]
    images = [
        [image((56, 56), 0, images_seed), image((84, 56), 1, images_seed + 1)],
        [],
        [image((56, 84), 2, images_seed + 2)],
    ]
    return convs, images


def make_batch(processor, model, convs=None, images=None, images_seed: int = 0) -> dict:
    """A right-padded training batch with labels on the assistant turn and the model's M-RoPE positions (if any)."""
    if convs is None:
        convs, images = conversations(images_seed)
    texts = [processor.apply_chat_template(c) for c in convs]
    flat = [im for per_sample in images for im in per_sample]
    processor.tokenizer.padding_side = "right"
    # padding_side here too: some processors (InternVL) default to left padding whatever the tokenizer says
    batch = dict(processor(text=texts, images=flat or None, return_tensors="pt", padding=True, padding_side="right"))
    input_ids = batch["input_ids"]
    labels = torch.full_like(input_ids, -100)
    for row in range(input_ids.shape[0]):
        ids = input_ids[row].tolist()
        start = max(i for i in range(len(ids) - 2) if ids[i : i + 3] == ASSISTANT_START) + 3
        end = int(batch["attention_mask"][row].sum())
        labels[row, start:end] = input_ids[row, start:end]
    batch["labels"] = labels
    if not hasattr(model.model, "get_rope_index"):  # 1-D RoPE (InternVL): swift's batch has no position_ids
        return batch
    position_ids, _ = model.model.get_rope_index(
        input_ids,
        image_grid_thw=batch.get("image_grid_thw"),
        attention_mask=batch["attention_mask"],
        mm_token_type_ids=batch.get("mm_token_type_ids"),
    )
    batch["position_ids"] = position_ids  # [3, B, L]
    return batch
