"""The LLaVA-OneVision test case: a tiny student built from a tiny Qwen2 LM (152064 rows; the student has 152128),
then perturbed; batches laid out as swift's ``llava_onevision_hf`` template lays them out: every image's
``<image>`` (151646) expanded to its full any-res feature count, crops of all images concatenated into 4-D
``pixel_values`` with ``image_sizes``, no ``position_ids``."""

from __future__ import annotations

import torch

from swift_lingudistill.tiny.qwen import make_qwen2_lm
from tests.support.harness import FamilyCase, train_like_swift
from tests.support.tiny.llava_onevision import (
    IMAGE_TOKEN_ID,
    TEACHER_SIZE,
    make_llava_onevision,
    make_llava_onevision_processor,
)
from tests.support.vl_batches import conversations

NAME = "llava_onevision_hf"
FORWARD_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_sizes")


def _swift_prompt(content: str | list[dict]) -> str:
    """The user turn as swift's template writes it (ChatML, no system turn, each image tag -> '<image>\\n')."""
    query = (
        content
        if isinstance(content, str)
        else "".join("<image>\n" if part["type"] == "image" else part["text"] for part in content)
    )
    return f"<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"


def make_llava_onevision_batch(processor, images_seed: int = 0) -> dict:
    """Three right-padded rows (two images, text-only, one image); labels on the answer and its ``<|im_end|>``."""
    tokenizer = processor.tokenizer
    convs, images = conversations(images_seed)
    rows, labels, pixels, sizes = [], [], [], []
    for conv, row_images in zip(convs, images, strict=True):
        prompt = tokenizer(_swift_prompt(conv[0]["content"]), add_special_tokens=False).input_ids
        expanded, k = [], 0
        for token in prompt:
            if token != IMAGE_TOKEN_ID:
                expanded.append(token)
                continue
            crops = processor.image_processor([row_images[k]], return_tensors="pt")  # one image, as swift
            height, width = crops["image_sizes"][0].tolist()
            crop = crops["pixel_values"].shape[-1]
            expanded += [IMAGE_TOKEN_ID] * processor._get_number_of_features(height, width, crop, crop)
            pixels.append(crops["pixel_values"][0])  # [crops, 3, 28, 28]
            sizes.append(crops["image_sizes"][0])
            k += 1
        answer = tokenizer(conv[1]["content"] + "<|im_end|>\n", add_special_tokens=False).input_ids
        rows.append(torch.tensor(expanded + answer))
        labels.append(torch.tensor([-100] * len(expanded) + answer))
    length = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.stack([torch.cat([r, r.new_full((length - len(r),), pad)]) for r in rows]),  # [B, L]
        "labels": torch.stack([torch.cat([r, r.new_full((length - len(r),), -100)]) for r in labels]),  # [B, L]
        "attention_mask": torch.stack([torch.arange(length) < len(r) for r in rows]).long(),  # [B, L]
        "pixel_values": torch.cat(pixels),  # [all crops, 3, 28, 28]
        "image_sizes": torch.stack(sizes),  # [images, 2]
    }


def llava_onevision_case(student_tokenizer, perturb: float = 0.5, other_seed: int = 1) -> FamilyCase:
    student = train_like_swift(make_llava_onevision(seed=0, lm=make_qwen2_lm(TEACHER_SIZE, seed=0), perturb=perturb))
    processor = make_llava_onevision_processor(student_tokenizer)
    return FamilyCase(
        name=NAME,
        student=student,
        other_teacher=make_qwen2_lm(TEACHER_SIZE, seed=other_seed),
        build_batch=lambda images_seed=0: make_llava_onevision_batch(processor, images_seed),
        forward_keys=FORWARD_KEYS,
    )
