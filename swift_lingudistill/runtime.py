"""Builds a run's Distiller once the student is ready: loads the teacher through swift's own model loading."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .distiller import Distiller
from .teacher import TeacherRunner, frozen_copy_teacher, lora_self_teacher, separate_teacher

if TYPE_CHECKING:
    from .integration import RunState

__all__ = ["build_distiller", "load_teacher"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_teacher(state: RunState, student: nn.Module) -> TeacherRunner:
    """The frozen teacher, placed and typed like the student; never attached to the trainer as a model."""
    from swift.utils import get_logger

    config, family = state.config, state.family
    if config.teacher.is_self:
        tuner = getattr(state.args, "tuner_type", "full")
        if hasattr(student, "disable_adapter"):  # peft.PeftModel: the base model is the snapshot, for free
            runner = lora_self_teacher(student, family)
        elif tuner == "full":
            runner = frozen_copy_teacher(student, family)
        else:
            raise ValueError(
                f"teacher `self` with --tuner_type {tuner}: the snapshot is the base model of a PEFT adapter "
                "(lora and other peft tuners) or a frozen copy with --tuner_type full; this tuner is neither. "
                "Fix: use one of those, or a separate teacher checkpoint."
            )
    else:
        dtype = _DTYPES.get(config.teacher.dtype) or state.args.torch_dtype
        # The teacher's own model_type: swift would otherwise fall back to the student's (a VLM loader).
        model, _ = state.args.get_model_processor(
            model=state.teacher_dir,
            model_type=state.teacher_model_type,
            task_type="causal_lm",
            torch_dtype=dtype,
            attn_impl="sdpa",
            load_model=True,
        )
        runner = separate_teacher(model, description=f"{config.teacher.model} ({state.teacher_model_type})")
    params = sum(p.numel() for p in runner.decoder.parameters()) / 1e6
    weight = runner.head.weight
    get_logger().info(
        f"LinguDistill teacher: {runner.description}; {params:.1f}M decoder parameters, {weight.dtype}, "
        f"{weight.device}; kv_share scope {config.kv_share.scope}, detach {config.kv_share.detach}"
    )
    return runner


def build_distiller(state: RunState, student: nn.Module) -> Distiller:
    """The per-run Distiller: teacher loaded, attention modules bound to the KV router."""
    family = state.family
    runner = load_teacher(state, student)
    student_attention = family.attention_modules(family.language_model(student))
    teacher_attention = runner.attention_modules(family)
    if len(student_attention) != len(teacher_attention):  # checked from configs already; weights could differ
        raise ValueError(
            f"student has {len(student_attention)} attention layers but the teacher has {len(teacher_attention)}"
        )
    return Distiller(
        state.config,
        family,
        runner,
        shared_vocab=state.shared_vocab or runner.vocab_rows,
        student_attention=student_attention,
    )
