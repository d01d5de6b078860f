"""The run's Distiller, built when swift builds the trainer: the teacher loaded through swift's model loading
and placed as swift places GKD teachers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..config import displayed_value
from ..distiller import Distiller
from ..rope_rebase import RotaryInfo, RotaryRebase
from ..teacher import (
    TeacherModule,
    TeacherRunner,
    frozen_copy_teacher,
    lora_self_teacher,
    reloaded_self_teacher,
    separate_teacher,
)
from .run_state import RunState

__all__ = ["build_distiller", "load_teacher"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_teacher(state: RunState, student: nn.Module, trainer: Any = None) -> TeacherRunner:
    """The frozen teacher, placed and typed like the student; never attached to the trainer as a model."""
    from swift.utils import get_logger

    config, family = state.config, state.family
    zero3 = _zero_stage(trainer) == 3
    if config.teacher.is_self:
        tuner = getattr(state.args, "tuner_type", "full")
        if hasattr(student, "disable_adapter"):  # peft.PeftModel: the base model is the snapshot, for free
            runner = lora_self_teacher(student, family)
        elif tuner == "full" and not zero3:
            runner = frozen_copy_teacher(student, family)
        elif tuner == "full":
            model, _ = state.args.get_model_processor(load_model=True)  # the student's checkpoint, again
            runner = reloaded_self_teacher(model, family)
        else:
            raise ValueError(
                f"teacher `self` with --tuner_type {tuner}: the snapshot is the base model of a PEFT adapter "
                "(lora and other peft tuners) or a frozen copy with --tuner_type full; this tuner is neither. "
                "Fix: use one of those, or a separate teacher checkpoint."
            )
    else:
        dtype = _DTYPES.get(config.teacher.dtype) or state.args.torch_dtype
        # The teacher's own model_type: swift would otherwise fall back to the student's (a VLM loader).
        with _swift_trusts_code(config.teacher.trust_remote_code):
            model, _ = state.args.get_model_processor(
                model=state.teacher_dir,
                model_type=state.teacher_model_type,
                task_type="causal_lm",
                torch_dtype=dtype,
                attn_impl="sdpa",
                load_model=True,
            )
        shown = displayed_value(config, "teacher.model", config.teacher.model)
        runner = separate_teacher(model, description=f"{shown} ({state.teacher_model_type})")
    if not runner.shares_student_weights:  # the student's own modules are placed with the student
        _place(runner, state, trainer)
    params = sum(getattr(p, "ds_numel", p.numel()) for p in runner.decoder.parameters()) / 1e6
    weight = runner.head.weight
    placement = runner.placement or str(weight.device)
    get_logger().info(
        f"LinguDistill teacher: {runner.description}; {params:.1f}M decoder parameters, {weight.dtype}, "
        f"{placement}; kv_share scope {config.kv_share.scope}, detach {config.kv_share.detach}"
    )
    return runner


@contextmanager
def _swift_trusts_code(trust: bool) -> Iterator[None]:
    """swift's model loader trusts a checkpoint's code by default; for the teacher, ``teacher.trust_remote_code``
    decides (a teacher that needs code without it was refused before anything loaded)."""
    from swift.model.register import ModelLoader

    before = ModelLoader.default_trust_remote_code
    ModelLoader.default_trust_remote_code = trust
    try:
        yield
    finally:
        ModelLoader.default_trust_remote_code = before


def _zero_stage(trainer: Any) -> int | None:
    if trainer is None or not getattr(trainer, "is_deepspeed_enabled", False):
        return None
    return int(trainer.accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage"])


def _place(runner: TeacherRunner, state: RunState, trainer: Any) -> None:
    """As swift places GKD teachers: under DeepSpeed an inference engine (ZeRO-3 stays sharded, other stages
    become stage 0), else the student's device; ``teacher.offload`` keeps the weights in CPU memory."""
    offload = state.config.teacher.offload
    device = getattr(getattr(trainer, "args", None), "device", None)
    stage = _zero_stage(trainer)
    if stage is not None:
        import copy

        from swift.rlhf_trainers.utils import prepare_deepspeed

        container = TeacherModule(runner.decoder, runner.head, _config_of(runner.decoder))
        ds_config = copy.deepcopy(trainer.accelerator.state.deepspeed_plugin.deepspeed_config)
        # The trainer finalises the batch sizes only when it prepares the student (in train()); an inference
        # engine needs them consistent with the real world size now.
        micro = trainer.args.per_device_train_batch_size
        ds_config["train_micro_batch_size_per_gpu"] = micro
        ds_config["gradient_accumulation_steps"] = trainer.args.gradient_accumulation_steps
        ds_config["train_batch_size"] = micro * trainer.args.gradient_accumulation_steps * _world_size()
        if offload and stage == 3:  # DeepSpeed keeps the shards in CPU memory and streams them per layer
            ds_config["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": False}
            offload = False
        plugin = SimpleNamespace(deepspeed_config=ds_config)
        engine = prepare_deepspeed(container, trainer.accelerator, deepspeed_plugin=plugin)
        runner.decoder, runner.head = engine.module.decoder, engine.module.head
        offloaded = ds_config["zero_optimization"].get("offload_param", {}).get("device") == "cpu"
        runner.placement = (
            f"DeepSpeed ZeRO-3, sharded{', parameters offloaded to CPU' if offloaded else ''}"
            if stage == 3
            else f"DeepSpeed inference engine (stage 0, from ZeRO-{stage}) on {runner.head.weight.device}"
        )
    # Without DeepSpeed, swift's loader already placed the teacher with the student's device map.
    if offload and device is not None:
        runner.offload(device)
        runner.placement = f"CPU memory, moved to {device} for each forward (teacher.offload)"


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _config_of(decoder: nn.Module) -> Any:
    return getattr(decoder, "config", None)


def build_distiller(state: RunState, student: nn.Module, trainer: Any = None) -> Distiller:
    """The per-run Distiller: teacher loaded and placed, attention modules bound to the KV router."""
    family = state.family
    runner = load_teacher(state, student, trainer)
    student_attention = family.attention_modules(family.language_model(student))
    teacher_attention = runner.attention_modules(family)
    if len(student_attention) != len(teacher_attention):  # checked from configs already; weights could differ
        raise ValueError(
            f"student has {len(student_attention)} attention layers but the teacher has {len(teacher_attention)}"
        )
    rebase = None
    if state.rotary_rebase:
        from swift.utils import get_logger

        student_lm = family.language_model(student)
        rebase = RotaryRebase.between(student_lm, runner.decoder)
        student_base, teacher_base = _base(_config_of(student_lm)), _base(_config_of(runner.decoder))
        get_logger().info(
            f"LinguDistill: the teacher rotates at base {teacher_base}, the student at {student_base}; the shared "
            "keys are re-based exactly (turned back at the student's frequencies, forward at the teacher's, same "
            "positions). kv_share.rebase_rotary: false refuses such a teacher instead."
        )
    return Distiller(
        state.config,
        family,
        runner,
        shared_vocab=state.shared_vocab or runner.vocab_rows,
        student_attention=student_attention,
        rebase=rebase,
    )


def _base(text_config: Any) -> str:
    info = RotaryInfo.from_config(text_config) if text_config is not None else None
    return info.describe().removeprefix("base ") if info is not None else "?"
