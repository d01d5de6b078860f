"""The Qwen2-VL / Qwen2.5-VL test cases (tiny students built from a tiny Qwen2 LM, then perturbed)."""

from __future__ import annotations

from swift_lingudistill.tiny import make_qwen2_lm, make_qwen_vl, make_qwen_vl_processor
from tests.support.harness import FamilyCase, train_like_swift
from tests.support.vl_batches import make_batch

QWEN_FAMILIES = ("qwen2_5_vl", "qwen2_vl")


def qwen_case(name: str, tokenizer) -> FamilyCase:
    student = train_like_swift(make_qwen_vl(name, seed=0, lm=make_qwen2_lm(seed=0), perturb=0.5))
    processor = make_qwen_vl_processor(name, tokenizer)
    return FamilyCase(
        name=name,
        student=student,
        other_teacher=make_qwen2_lm(seed=1),
        build_batch=lambda images_seed=0: make_batch(processor, student, images_seed=images_seed),
        forward_keys=("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "position_ids"),
    )
