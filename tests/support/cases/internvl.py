"""The InternVL3-hf test case: a tiny student built from a tiny Qwen2.5-like LM (152064 rows, no rope scaling),
then perturbed; batches laid out as swift's ``internvl_hf`` template lays them out (``<img>``, the tile's
``<IMG_CONTEXT>`` tokens, ``</img>\\n``, then the text), with no ``position_ids``."""

from __future__ import annotations

from swift_lingudistill.tiny.qwen import make_qwen2_lm
from tests.support.harness import FamilyCase, train_like_swift
from tests.support.tiny.internvl import TEACHER_SIZE, make_internvl, make_internvl_processor
from tests.support.vl_batches import make_batch

NAME = "internvl"
FORWARD_KEYS = ("input_ids", "attention_mask", "pixel_values")


def internvl_case(tokenizer, perturb: float = 0.5, other_seed: int = 1) -> FamilyCase:
    """Images of 56x56, 84x56 and 56x84 pixels: 1, 3 and 3 tiles of 4 <IMG_CONTEXT> tokens."""
    student = train_like_swift(make_internvl(seed=0, lm=make_qwen2_lm(TEACHER_SIZE, seed=0), perturb=perturb))
    processor = make_internvl_processor(tokenizer)
    return FamilyCase(
        name=NAME,
        student=student,
        other_teacher=make_qwen2_lm(TEACHER_SIZE, seed=other_seed),
        build_batch=lambda images_seed=0: make_batch(processor, student, images_seed=images_seed),
        forward_keys=FORWARD_KEYS,
    )
