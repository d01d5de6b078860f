"""The LLaVA-1.5 test cases: tiny students built from a tiny Vicuna-like Llama LM, batches laid out as swift's
``llava1_5_hf`` template lays them out, and a teacher tokenizer that disagrees on shared ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from tests.support.harness import FamilyCase, train_like_swift
from tests.support.tiny.llava import (
    IMAGE_TOKEN,
    LLAVA_SIZE,
    make_llama_lm,
    make_llava,
    make_llava_processor,
)
from tests.support.vl_batches import conversations

NAME = "llava1_5_hf"
FORWARD_KEYS = ("input_ids", "attention_mask", "pixel_values")  # swift's batch has no position_ids here


def _swift_prompt(content: str | list[dict]) -> str:
    """The user turn as swift's llava1_5_hf template writes it: prefix `<s>`, each image tag -> `<image>\\n`."""
    if isinstance(content, str):
        query = content
    else:
        query = "".join(f"{IMAGE_TOKEN}\n" if part["type"] == "image" else part["text"] for part in content)
    return f"<s>USER: {query}\nASSISTANT:"


def make_llava_batch(processor, images_seed: int = 0) -> dict:
    """Three right-padded rows (two images, text-only, one image); labels on the answer and its `</s>`."""
    tokenizer = processor.tokenizer
    convs, images = conversations(images_seed)
    rows, labels, pixels = [], [], []
    for conv, row_images in zip(convs, images, strict=True):
        prompt = processor(text=_swift_prompt(conv[0]["content"]), images=row_images or None, return_tensors="pt")
        answer = tokenizer(conv[1]["content"] + "</s>", add_special_tokens=False, return_tensors="pt").input_ids[0]
        prompt_ids = prompt["input_ids"][0]
        rows.append(torch.cat([prompt_ids, answer]))
        labels.append(torch.cat([torch.full_like(prompt_ids, -100), answer]))
        if row_images:
            pixels.append(prompt["pixel_values"])
    length = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.stack([torch.cat([r, r.new_full((length - len(r),), pad)]) for r in rows])  # [B, L]
    label_ids = torch.stack([torch.cat([r, r.new_full((length - len(r),), -100)]) for r in labels])  # [B, L]
    mask = torch.stack([torch.arange(length) < len(r) for r in rows]).long()  # [B, L]
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "labels": label_ids,
        "pixel_values": torch.cat(pixels),  # [images, 3, 42, 42]
    }


def llava_case(student_tokenizer, perturb: float = 0.5, other_seed: int = 1) -> FamilyCase:
    """A tiny LLaVA-1.5 student (vocab = teacher vocab + 1) built from ``make_llama_lm(seed=0)``, then perturbed."""
    student = train_like_swift(make_llava(LLAVA_SIZE, seed=0, lm=make_llama_lm(LLAVA_SIZE, seed=0), perturb=perturb))
    processor = make_llava_processor(student_tokenizer)
    return FamilyCase(
        name=NAME,
        student=student,
        other_teacher=make_llama_lm(LLAVA_SIZE, seed=other_seed),
        build_batch=lambda images_seed=0: make_llava_batch(processor, images_seed),
        forward_keys=FORWARD_KEYS,
    )


def teacher_with_swapped_ids(teacher_dir: Path, out_dir: Path, first: int, second: int) -> Path:
    """A copy of a teacher checkpoint whose tokenizer gives ids ``first`` and ``second`` each other's tokens."""
    shutil.copytree(teacher_dir, out_dir)
    path = out_dir / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]  # token -> id; BPE merges name tokens, so the swap keeps the file loadable
    by_id = {i: t for t, i in vocab.items()}
    vocab[by_id[first]], vocab[by_id[second]] = second, first
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return out_dir
