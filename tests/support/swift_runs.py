"""Run the real `swift sft` command in a subprocess, offline on the CPU, and read what it logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from swift_lingudistill import plugin_path

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MODELSCOPE_OFFLINE": "1",
    "USE_HF": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

# The flags every run needs on this CPU machine (ms-swift 4.6 on a CPU): offline, no fp16, no hub checks, few steps.
CPU_FLAGS = [
    "--use_hf", "true",
    "--check_model", "false",
    "--fp16", "false",
    "--bf16", "false",
    "--torch_dtype", "float32",
    "--gradient_accumulation_steps", "1",
    "--logging_steps", "1",
    "--dataloader_num_workers", "0",
    "--dataset_num_proc", "1",
    "--split_dataset_ratio", "0",
    "--report_to", "none",
    "--save_strategy", "no",
]  # fmt: skip


def swift_executable() -> str:
    candidate = Path(sys.executable).parent / "swift"
    return str(candidate) if candidate.exists() else "swift"


class SwiftRun:
    """One finished `swift sft` run: return code, combined output, and its logging.jsonl records."""

    def __init__(self, returncode: int, output: str, output_dir: Path) -> None:
        self.returncode = returncode
        self.output = output
        self.output_dir = output_dir

    @property
    def run_dir(self) -> Path:
        """swift writes into `<output_dir>/v<N>-<timestamp>/`."""
        runs = sorted(p for p in self.output_dir.glob("v*-*") if p.is_dir())
        if not runs:
            raise AssertionError(f"no run folder under {self.output_dir}:\n{self.output[-3000:]}")
        return runs[-1]

    def log_records(self) -> list[dict]:
        path = self.run_dir / "logging.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def step_records(self) -> list[dict]:
        return [r for r in self.log_records() if "global_step/max_steps" in r and "loss" in r]

    def check_ok(self) -> SwiftRun:
        if self.returncode != 0:
            raise AssertionError(f"swift sft failed ({self.returncode}):\n{self.output[-6000:]}")
        return self


def run_sft(
    model: Path,
    dataset: Path,
    output_dir: Path,
    *extra: str,
    config: str | None = None,
    env: dict | None = None,
    model_type: str = "qwen2_5_vl",
    steps: int = 2,
    batch_size: int = 2,
    plugin: bool = True,
    timeout: int = 600,
) -> SwiftRun:
    """`swift sft` on a local tiny model; ``config`` goes in LINGUDISTILL_CONFIG when given."""
    cmd = [
        swift_executable(), "sft",
        "--model", str(model),
        "--model_type", model_type,
        "--template", model_type,
        "--dataset", str(dataset),
        "--output_dir", str(output_dir),
        "--max_steps", str(steps),
        "--per_device_train_batch_size", str(batch_size),
        *CPU_FLAGS,
    ]  # fmt: skip
    if plugin:
        cmd += ["--external_plugins", plugin_path()]
    cmd += list(extra)
    full_env = {**os.environ, **OFFLINE, **(env or {})}
    full_env.pop("LINGUDISTILL_CONFIG", None)
    if config is not None:
        full_env["LINGUDISTILL_CONFIG"] = str(config)
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
    return SwiftRun(proc.returncode, proc.stdout + proc.stderr, output_dir)


def run_sft_yaml(config: dict, path: Path, timeout: int = 600) -> SwiftRun:
    """`swift sft config.yaml`: swift reads the flags and exports the YAML's ENV block itself."""
    import yaml

    flags = dict(zip(CPU_FLAGS[::2], CPU_FLAGS[1::2], strict=True))
    data = {k.lstrip("-"): v for k, v in flags.items()} | config
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, **OFFLINE}
    env.pop("LINGUDISTILL_CONFIG", None)
    proc = subprocess.run(
        [swift_executable(), "sft", str(path)], env=env, capture_output=True, text=True, timeout=timeout
    )
    return SwiftRun(proc.returncode, proc.stdout + proc.stderr, Path(config["output_dir"]))


def free_port() -> int:
    """A TCP port nothing listens on now, for torchrun's rendezvous on loopback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distributed_env(processes: int = 2) -> dict:
    """swift's launcher variables for several processes on this machine (gloo on the CPU)."""
    return {"NPROC_PER_NODE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
