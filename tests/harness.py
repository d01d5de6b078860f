"""In-process harness for the direct tests: a tiny VLM training like swift does, and its Distiller."""

from __future__ import annotations

import pytest
import torch

from swift_lingudistill.config import config_from_dict
from swift_lingudistill.distiller import BatchContext, Distiller
from swift_lingudistill.families import family_for
from swift_lingudistill.kv_share import ROUTER
from swift_lingudistill.teacher import frozen_copy_teacher, separate_teacher
from swift_lingudistill.tiny import make_qwen2_lm, make_qwen_vl, make_qwen_vl_processor

FAMILIES = ("qwen2_5_vl", "qwen2_vl")
SCOPES = ("image", "prompt", "all")


@pytest.fixture(scope="module", params=FAMILIES)
def vl_setup(request, tokenizer):
    """A tiny VLM built from a tiny LM (then perturbed), in train mode with reentrant checkpointing."""
    family_name = request.param
    lm = make_qwen2_lm(seed=0)
    student = make_qwen_vl(family_name, seed=0, lm=lm, perturb=0.5)
    student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    student.enable_input_require_grads()
    student.train()
    processor = make_qwen_vl_processor(family_name, tokenizer)
    return {
        "name": family_name,
        "family": family_for(family_name),
        "student": student,
        "processor": processor,
        "other_teacher": make_qwen2_lm(seed=1),
    }


def distiller_for(
    setup, teacher_model=None, scope: str = "image", compact: bool = True, loss: dict | None = None
) -> Distiller:
    """Self teacher (a frozen copy) when ``teacher_model`` is None, else that text-only LM."""
    family, student = setup["family"], setup["student"]
    config = config_from_dict({"teacher": {"model": "self"}, "kv_share": {"scope": scope}, "loss": loss or {}})
    runner = frozen_copy_teacher(student, family) if teacher_model is None else separate_teacher(teacher_model, "other")
    return Distiller(
        config,
        family,
        runner,
        shared_vocab=runner.vocab_rows,
        student_attention=family.attention_modules(family.language_model(student)),
        compact=compact,
    )


def context(setup, batch, weights=(1.0, 1.0, 1.0)) -> BatchContext:
    family, student = setup["family"], setup["student"]
    ids = batch["input_ids"]
    sample_weight = torch.tensor(weights)
    return BatchContext(
        input_ids=ids,
        labels=batch["labels"],
        valid=batch["attention_mask"].bool(),
        rotary=family.rotary_positions(batch, student),
        vision=family.vision_mask(ids, student.config),
        token_weight=sample_weight[:, None].expand_as(ids),
        sample_weight=sample_weight,
    )


def student_logits(setup, batch, capture: bool = True) -> torch.Tensor:
    """[B, L, V] student logits from a training-mode forward that also captures the per-layer K/V."""
    keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "position_ids")
    if capture:
        ROUTER.start_capture()
    out = setup["student"](**{k: batch[k] for k in keys if k in batch})
    if capture:
        ROUTER.finish_capture()
    return out.logits


def teacher_logits(distiller: Distiller, ctx: BatchContext, positions: torch.Tensor) -> torch.Tensor:
    """[N, V] teacher logits at ``positions`` [B, L] (row-major order)."""
    with torch.no_grad():
        hidden = distiller.teacher_hidden(ctx, positions)
        return distiller.teacher.head(hidden)


def text_positions(ctx: BatchContext) -> torch.Tensor:
    return ctx.valid & ~ctx.vision
