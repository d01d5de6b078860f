"""The Gemma 3 test case: a tiny Gemma 3 VLM built from a tiny Gemma 3 text LM, then perturbed, and its batches.

Batches mirror what swift 4.6 feeds the model: the processor's token ids, right padding, and ``token_type_ids``
marked the way swift's ``Gemma3VisionTemplate`` marks them (``ids == processor.image_token_id``, which is the
``<start_of_image>`` id with transformers 5.19, so soft image tokens attend causally). ``image_attention=
"bidirectional"`` marks the soft tokens instead (transformers' own processor), so image tokens attend to each
other both ways.
"""

from __future__ import annotations

import torch

from tests.support.harness import FamilyCase, train_like_swift
from tests.support.tiny.gemma3 import (
    IMAGE_SOFT_ID,
    gemma3_tokenizer,
    make_gemma3_lm,
    make_gemma3_processor,
    make_gemma3_vl,
)
from tests.support.vl_batches import image

FORWARD_KEYS = ("input_ids", "attention_mask", "pixel_values", "token_type_ids")


def conversations() -> list[list[dict]]:
    """Two images + text, text-only, one image; short texts (character-level tokenizer) of different lengths."""
    return [
        [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Both?"}, {"type": "image"}]},
            {"role": "assistant", "content": "Red, then green."},
        ],
        [
            {"role": "user", "content": "Tell me a story."},
            {"role": "assistant", "content": "A cat read a book."},
        ],
        [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
            {"role": "assistant", "content": "Blue."},
        ],
    ]


def swift_token_type_ids(input_ids: torch.Tensor, processor) -> torch.Tensor:
    """[B, L] what swift 4.6's Gemma3VisionTemplate._encode writes: 1 where ids == processor.image_token_id."""
    return (input_ids == processor.image_token_id).long()


def gemma3_batch(processor, images_seed: int = 0, image_attention: str = "swift") -> dict:
    """A right-padded batch of three rows with labels on the model turn (see the module docstring)."""
    convs = conversations()
    texts = [processor.apply_chat_template(c) for c in convs]
    images = [
        [image((48, 48), 0, images_seed), image((72, 48), 1, images_seed + 1)],
        [],
        [image((48, 64), 2, images_seed + 2)],
    ]
    processor.tokenizer.padding_side = "right"
    batch = dict(processor(text=texts, images=images, return_tensors="pt", padding=True))
    input_ids = batch["input_ids"]
    if image_attention == "swift":
        batch["token_type_ids"] = swift_token_type_ids(input_ids, processor)
    elif image_attention == "bidirectional":
        batch["token_type_ids"] = (input_ids == IMAGE_SOFT_ID).long()
    else:
        raise ValueError(f"image_attention {image_attention!r}: use 'swift' or 'bidirectional'")
    labels = torch.full_like(input_ids, -100)
    model_turn = processor.tokenizer("<start_of_turn>model\n", add_special_tokens=False).input_ids
    for row in range(input_ids.shape[0]):
        ids = input_ids[row].tolist()
        n = len(model_turn)
        start = max(i for i in range(len(ids) - n) if ids[i : i + n] == model_turn) + n
        end = int(batch["attention_mask"][row].sum())
        labels[row, start:end] = input_ids[row, start:end]
    batch["labels"] = labels
    return batch


def gemma3_case(image_attention: str = "swift", processor=None) -> FamilyCase:
    """Student: eager attention (as swift forces), train mode, reentrant gradient checkpointing."""
    student = train_like_swift(make_gemma3_vl(seed=0, lm=make_gemma3_lm(seed=0), perturb=0.5))
    processor = processor or make_gemma3_processor(gemma3_tokenizer())
    return FamilyCase(
        name="gemma3_vision",
        student=student,
        other_teacher=make_gemma3_lm(seed=1),
        build_batch=lambda images_seed=0: gemma3_batch(processor, images_seed, image_attention),
        forward_keys=FORWARD_KEYS,
    )


__all__ = ["FORWARD_KEYS", "conversations", "gemma3_batch", "gemma3_case", "swift_token_type_ids"]
