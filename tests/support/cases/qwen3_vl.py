"""The Qwen3-VL test case: a tiny student built from a tiny Qwen3 LM, then perturbed, trained as swift trains it."""

from __future__ import annotations

from tests.support.harness import FamilyCase, train_like_swift
from tests.support.tiny.qwen3_vl import make_qwen3_lm, make_qwen3_vl, make_qwen3_vl_processor
from tests.support.vl_batches import conversations, image, make_batch

# Sides are multiples of 32 (patch 16 x merge 2): 4, 6 and 6 image tokens on 2x2, 2x3 and 3x2 merged grids.
IMAGE_SIZES = ((64, 64), (96, 64), (64, 96))
FORWARD_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "position_ids")


def qwen3_vl_batch(processor, student, images_seed: int = 0) -> dict:
    """Row 0: two images; row 1: text-only; row 2: one image; right padding; [3, B, L] positions as swift's."""
    convs, _ = conversations(images_seed)
    (a, b, c) = IMAGE_SIZES
    images = [
        [image(a, 0, images_seed), image(b, 1, images_seed + 1)],
        [],
        [image(c, 2, images_seed + 2)],
    ]
    return make_batch(processor, student, convs, images)


def qwen3_vl_case(tokenizer) -> FamilyCase:
    student = train_like_swift(make_qwen3_vl(seed=0, lm=make_qwen3_lm(seed=0), perturb=0.5))
    processor = make_qwen3_vl_processor(tokenizer)
    return FamilyCase(
        name="qwen3_vl",
        student=student,
        other_teacher=make_qwen3_lm(seed=1),
        build_batch=lambda images_seed=0: qwen3_vl_batch(processor, student, images_seed),
        forward_keys=FORWARD_KEYS,
    )
