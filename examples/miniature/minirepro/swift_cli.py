"""Stages 2 and 3 run the real ``swift sft`` command (a subprocess), offline on the CPU, full fine-tuning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CPU_FLAGS", "MINIATURE_DIR", "OFFLINE_ENV", "SwiftResult", "plugin_files", "swift_sft"]

MINIATURE_DIR = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MODELSCOPE_OFFLINE": "1",
    "USE_HF": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # One thread per process: on a small shared CPU, OpenMP threads that spin-wait for a busy core make tiny
    # models 10-20x slower (measured: 0.07 s vs 1.8 s a step on 2 cores with another job running).
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
# tests/support/swift_runs.py's CPU_FLAGS, except that the last checkpoint is saved: it is measured.
CPU_FLAGS = [
    "--use_hf", "true",
    "--check_model", "false",
    "--fp16", "false",
    "--bf16", "false",
    "--torch_dtype", "float32",
    "--gradient_accumulation_steps", "1",
    "--logging_steps", "5",
    "--dataloader_num_workers", "0",
    "--dataset_num_proc", "1",
    "--split_dataset_ratio", "0",
    "--report_to", "none",
]  # fmt: skip
# Full fine-tuning of everything: the vision tower is new, so it must train (swift freezes it by default).
TRAIN_FLAGS = [
    "--tuner_type", "full",
    "--freeze_vit", "false",
    "--freeze_aligner", "false",
    "--gradient_checkpointing", "false",
    "--warmup_ratio", "0.05",
    "--lr_scheduler_type", "cosine",
    "--save_only_model", "true",
]  # fmt: skip


def plugin_files() -> list[str]:
    """What ``--external_plugins`` gets: LinguDistill's entry file and the miniature's template plugin."""
    from swift_lingudistill import plugin_path

    return [plugin_path(), str(MINIATURE_DIR / "plugin.py")]


@dataclass
class SwiftResult:
    """A finished run: its final checkpoint, its logged records and its wall time."""

    checkpoint: Path
    records: list[dict]
    seconds: float
    output: str

    def evals(self) -> list[dict]:
        """The records of swift's evaluations (with the monitor's lang_ppl / lang_kl when it ran)."""
        return [r for r in self.records if "eval_loss" in r]

    def steps(self) -> list[dict]:
        return [r for r in self.records if "loss" in r and "eval_loss" not in r and "global_step/max_steps" in r]


def swift_sft(
    model: Path,
    dataset: Path,
    output_dir: Path,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: int = 3600,
) -> SwiftResult:
    """``swift sft`` on a local checkpoint; returns the saved checkpoint (raises with swift's output on failure)."""
    swift = Path(sys.executable).parent / "swift"
    cmd = [
        str(swift) if swift.exists() else "swift", "sft",
        "--model", str(model),
        "--model_type", "qwen2_5_vl",  # LinguDistill picks its family adapter from this
        "--template", "miniature_qwen2_5_vl",  # ours: swift's qwen2_5_vl with the small image-token ids
        "--dataset", str(dataset),
        "--output_dir", str(output_dir),
        "--max_steps", str(steps),
        "--save_steps", str(steps),
        "--per_device_train_batch_size", str(batch_size),
        "--per_device_eval_batch_size", str(batch_size),
        "--learning_rate", str(lr),
        "--seed", str(seed),
        "--data_seed", str(seed),
        "--external_plugins", *plugin_files(),
        *CPU_FLAGS,
        *TRAIN_FLAGS,
        *extra,
    ]  # fmt: skip
    full_env = {**os.environ, **OFFLINE_ENV, **(env or {})}
    for key in ("LINGUDISTILL_CONFIG", "LINGUDISTILL_TEACHER"):
        if key not in (env or {}):
            full_env.pop(key, None)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    (Path(output_dir) / "swift.log").parent.mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "swift.log").write_text(" ".join(cmd) + "\n\n" + output, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"swift sft failed ({proc.returncode}); log in {output_dir}/swift.log:\n{output[-4000:]}")
    runs = sorted(p for p in Path(output_dir).glob("v*-*") if p.is_dir())
    if not runs:
        raise RuntimeError(f"swift sft wrote no run folder under {output_dir}")
    checkpoint = runs[-1] / f"checkpoint-{steps}"
    if not (checkpoint / "config.json").is_file():
        raise RuntimeError(f"swift sft saved no checkpoint at {checkpoint}")
    log = runs[-1] / "logging.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return SwiftResult(checkpoint, records, seconds, output)
