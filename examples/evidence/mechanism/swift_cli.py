"""The real ``swift sft`` on the harness's models: the demo and the in-process-equals-swift test use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .batches import Encoded

__all__ = ["CPU_FLAGS", "EVIDENCE_DIR", "OFFLINE_ENV", "SwiftResult", "plugin_files", "swift_sft", "write_jsonl"]

EVIDENCE_DIR = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "MODELSCOPE_OFFLINE": "1",
    "USE_HF": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",  # one thread per process on a small shared CPU (see run.py)
    "MKL_NUM_THREADS": "1",
}
# tests/swift_runs.py's CPU flags (SWIFT_NOTES.md), logging every step.
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
]  # fmt: skip
# The in-process loop's order and schedule: rows in file order, the harness's recovery recipe otherwise swift's
# defaults (full fine-tuning of the language model; vision tower and merger frozen, as swift does by default).
TRAIN_FLAGS = [
    "--tuner_type", "full",
    "--dataset_shuffle", "false",
    "--train_dataloader_shuffle", "false",
    "--lr_scheduler_type", "cosine",
    "--save_only_model", "true",
]  # fmt: skip


def plugin_files(with_lingudistill: bool = True) -> list[str]:
    """``--external_plugins``: LinguDistill's entry file and the harness's template plugin."""
    from . import plugin_api

    ours = str(EVIDENCE_DIR / "swift_plugin.py")
    return [plugin_api.plugin_path(), ours] if with_lingudistill else [ours]


def write_jsonl(rows: Sequence[Encoded], path: Path) -> Path:
    """The rows as swift JSONL in this order; pictures saved as PNG (lossless: the same pixels) next to it."""
    images = path.parent / f"{path.stem}_images"
    images.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, encoded in enumerate(rows):
            record = {k: v for k, v in encoded.row.items() if k != "images"}
            if encoded.sample.picture is not None:
                file = images / f"{i:05d}.png"
                encoded.sample.picture.image.save(file)
                record["images"] = [str(file.resolve())]
            f.write(json.dumps(record) + "\n")
    return path


@dataclass
class SwiftResult:
    """A finished run: its logged step records, its last checkpoint (if saved), output and wall time."""

    records: list[dict]
    output: str
    seconds: float
    run_dir: Path

    def steps(self) -> list[dict]:
        return [r for r in self.records if "loss" in r and "global_step/max_steps" in r]


def swift_sft(
    model: Path,
    dataset: Path,
    output_dir: Path,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    warmup_ratio: float = 0.0,
    lingudistill: bool = True,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: int = 1800,
) -> SwiftResult:
    """``swift sft`` on a local checkpoint of the harness (raises with swift's output on failure)."""
    swift = Path(sys.executable).parent / "swift"
    cmd = [
        str(swift) if swift.exists() else "swift", "sft",
        "--model", str(model),
        "--model_type", "qwen2_5_vl",
        "--template", "evidence_qwen2_5_vl",
        "--dataset", str(dataset),
        "--output_dir", str(output_dir),
        "--max_steps", str(steps),
        "--per_device_train_batch_size", str(batch_size),
        "--learning_rate", str(lr),
        "--warmup_ratio", str(warmup_ratio),
        "--external_plugins", *plugin_files(lingudistill),
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
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "swift.log").write_text(" ".join(cmd) + "\n\n" + output, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"swift sft failed ({proc.returncode}); log in {output_dir}/swift.log:\n{output[-4000:]}")
    runs = sorted(p for p in output_dir.glob("v*-*") if p.is_dir())
    if not runs:
        raise RuntimeError(f"swift sft wrote no run folder under {output_dir}")
    log = runs[-1] / "logging.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return SwiftResult(records, output, seconds, runs[-1])
