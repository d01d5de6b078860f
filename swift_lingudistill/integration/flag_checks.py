"""swift flags that LinguDistill cannot honour, refused with the fix before any model loads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..config import LinguDistillConfig
from .run_state import LOSS_TYPE, MONITOR_CALLBACK, PluginUsageError

__all__ = [
    "MULTI_PROCESS_ACCELERATORS",
    "accelerator",
    "check_deepspeed_installed",
    "check_monitor_needs_the_loss",
    "check_swift_flags",
]


def check_swift_flags(args: Any, config: LinguDistillConfig) -> None:
    """Every problem of this command line at once, each with its fix."""
    problems = []
    if getattr(args, "task_type", "causal_lm") != "causal_lm":
        problems.append(f"--task_type {args.task_type}: LinguDistill distils next-token distributions (causal_lm)")
    if (getattr(args, "sequence_parallel_size", 1) or 1) > 1:
        problems.append("--sequence_parallel_size > 1 is not supported: the teacher needs whole sequences")
    if getattr(args, "enable_dft_loss", False):
        problems.append("--enable_dft_loss would be ignored by the LinguDistill loss; remove it")
    if getattr(args, "cached_dataset", None) or getattr(args, "cached_val_dataset", None):
        problems.append(
            "--cached_dataset rows were encoded without LinguDistill tags; pass the raw data with --dataset"
        )
    if getattr(args, "tuner_backend", None) == "unsloth":
        problems.append("--tuner_backend unsloth returns no logits; use the default peft backend")
    if not config.kv_share.detach and getattr(args, "gradient_checkpointing", False) and _use_reentrant(args):
        problems.append(
            "kv_share.detach: false needs gradient to flow through the student's K/V, but reentrant gradient "
            "checkpointing (swift's default here) runs the forward without gradient. Fix: add "
            "--gradient_checkpointing_kwargs '{\"use_reentrant\": false}' (or --gradient_checkpointing false), "
            "or keep detach: true"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not getattr(args, "use_cpu", False):
        problems += _multi_process_problems(accelerator())
    problems += _monitor_problems(args, config)
    if problems:
        raise PluginUsageError(
            "LinguDistill cannot run with these swift arguments:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def check_deepspeed_installed(args: Any) -> None:
    """DeepSpeed is an optional extra: a --deepspeed run without it stops with the install command."""
    import importlib.util

    if getattr(args, "deepspeed", None) and importlib.util.find_spec("deepspeed") is None:
        raise PluginUsageError(
            f"--deepspeed {args.deepspeed} needs the deepspeed package, which is not installed. "
            "Fix: pip install 'swift-lingudistill[deepspeed]'"
        )


def check_monitor_needs_the_loss(args: Any) -> None:
    """The monitor measures against the run's teacher, which only ``--loss_type lingudistill`` builds."""
    if _monitor_enabled(args):
        raise PluginUsageError(
            f"--callbacks {MONITOR_CALLBACK} needs --loss_type {LOSS_TYPE} and `monitor.dataset` (a held-out "
            "text-only JSONL) in the plugin config. Fix: add both, or remove the callback."
        )


def _monitor_enabled(args: Any) -> bool:
    return MONITOR_CALLBACK in (getattr(args, "callbacks", None) or [])


def _monitor_problems(args: Any, config: LinguDistillConfig) -> list[str]:
    dataset = config.monitor.dataset
    if not _monitor_enabled(args):
        return [] if dataset is None else [
            f"monitor.dataset is set but --callbacks {MONITOR_CALLBACK} is not: the held-out set would be ignored. "
            f"Fix: add --callbacks {MONITOR_CALLBACK}, or remove the monitor section"
        ]  # fmt: skip
    problems = []
    if dataset is None:
        problems.append(
            f"--callbacks {MONITOR_CALLBACK} needs monitor.dataset in the plugin config: a held-out text-only JSONL "
            "(swift's messages format) on which to measure the student's perplexity and its KL to the teacher"
        )
    elif not Path(dataset).is_file():
        problems.append(f"monitor.dataset {dataset!r} does not exist. Fix: point it at a held-out text-only JSONL")
    if str(getattr(args, "eval_strategy", "no")) in ("no", "IntervalStrategy.NO"):
        problems.append(
            f"--callbacks {MONITOR_CALLBACK} measures at each evaluation, and this run never evaluates. Fix: add "
            "--eval_strategy steps --eval_steps N with --val_dataset or --split_dataset_ratio"
        )
    return problems


# The multi-process backends accelerate's PartialState chooses from, in its order (accelerate/state.py,
# `_prepare_backend`; transformers' Trainer and so swift go through it): (name, accelerate.utils helper).
_DISTRIBUTED_ACCELERATORS = (
    ("XLA", "is_torch_xla_available"),
    ("MLU", "is_mlu_available"),
    ("SDAA", "is_sdaa_available"),
    ("MUSA", "is_musa_available"),
    ("NPU", "is_npu_available"),
    ("HPU", "is_hpu_available"),
    ("CUDA", "is_cuda_available"),
    ("XPU", "is_xpu_available"),
    ("NEURON", "is_neuron_available"),
)
MULTI_PROCESS_ACCELERATORS = frozenset(name for name, _ in _DISTRIBUTED_ACCELERATORS)


def accelerator() -> str:
    """The accelerator this process trains on, as accelerate detects it: one of MULTI_PROCESS_ACCELERATORS,
    ``MPS`` (Apple, one process only) or ``CPU``."""
    import accelerate.utils

    for name, helper in _DISTRIBUTED_ACCELERATORS:
        available = getattr(accelerate.utils, helper, None)  # helpers an older accelerate lacks: not present
        if available is not None and available():
            if name == "XPU" and not accelerate.utils.is_xccl_available():
                continue  # accelerate runs XPU ranks only over its xccl backend
            return name
    return "MPS" if accelerate.utils.is_mps_available() else "CPU"


def _multi_process_problems(device: str) -> list[str]:
    """Why several processes on this device would not form one distributed run (nothing when they would)."""
    if device in MULTI_PROCESS_ACCELERATORS:
        return []
    if device == "MPS":
        return [
            "several processes on Apple MPS: accelerate has no multi-process MPS backend, so each process would "
            "train its own replica. Fix: run one process (unset NPROC_PER_NODE / NNODES)"
        ]
    return [
        "several CPU processes without --use_cpu true: transformers then does not treat the run as distributed, "
        "so the ranks train separate replicas (plain DDP) or DeepSpeed fails its batch-size check. Fix: add "
        "--use_cpu true"
    ]


def _use_reentrant(args: Any) -> bool:
    """swift's rule (SwiftMixin._fix_gradient_checkpointing): reentrant unless told or plain DDP."""
    kwargs = getattr(args, "gradient_checkpointing_kwargs", None) or {}
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)
    value = kwargs.get("use_reentrant")
    if value is not None:
        return bool(value)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return not (world > 1 and not getattr(args, "deepspeed", None) and not getattr(args, "fsdp", None))
