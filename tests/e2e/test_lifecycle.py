"""Run lifecycle through the real `swift sft`: resume, clean checkpoints, the trained model without the plugin,
`swift infer`, and faults (a teacher that does not exist, a teacher that gives NaN)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from swift_lingudistill.integration.run_state import CONFIG_FILENAME
from tests.support import REPO
from tests.support.swift_runs import OFFLINE, SwiftRun, run_sft, swift_executable

pytestmark = pytest.mark.slow

SELECTIVE = REPO / "plugin_configs" / "selective.yaml"
SAVE_EVERY_2 = ("--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "5")


def train(assets: dict, out: Path, *extra: str, plugin: bool = True, steps: int = 4, **kwargs) -> SwiftRun:
    args = ["--tuner_type", "full", *SAVE_EVERY_2, *extra]
    if plugin:
        args += ["--loss_type", "lingudistill"]
        kwargs.setdefault("config", SELECTIVE)
        kwargs.setdefault("env", {"LINGUDISTILL_TEACHER": str(assets["teacher"])})
    return run_sft(assets["student"], assets["dataset"], out, *args, steps=steps, plugin=plugin, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(demo_assets, tmp_path_factory) -> SwiftRun:
    """4 steps, checkpoints at steps 2 and 4."""
    return train(demo_assets, tmp_path_factory.mktemp("uninterrupted")).check_ok()


def test_resume_continues_with_the_same_losses_and_the_saved_config(demo_assets, uninterrupted, tmp_path):
    """Stopping after checkpoint-2 and resuming gives the uninterrupted run's losses for steps 3 and 4.

    The config is restored from the checkpoint (no LINGUDISTILL_CONFIG); it names the teacher as
    ${LINGUDISTILL_TEACHER}, so the resume reads that variable again (test_bad_inputs: refused when unset)."""
    checkpoint = uninterrupted.run_dir / "checkpoint-2"
    assert (checkpoint / CONFIG_FILENAME).exists()
    env = {"LINGUDISTILL_TEACHER": str(demo_assets["teacher"])}
    resumed = train(demo_assets, tmp_path, "--resume_from_checkpoint", str(checkpoint), config=None, env=env).check_ok()
    assert f"LinguDistill config {checkpoint / CONFIG_FILENAME}" in resumed.output
    before = {r["global_step/max_steps"]: r for r in uninterrupted.step_records()}
    after = {r["global_step/max_steps"]: r for r in resumed.step_records()}
    assert set(after) == {"3/4", "4/4"}
    for step in after:
        for key in ("loss", "ce_loss", "distill_frac", "kd_loss", "grad_norm"):
            assert (key in after[step]) == (key in before[step])
            if key in after[step]:
                assert after[step][key] == pytest.approx(before[step][key], rel=1e-4, abs=1e-7), (step, key)


def test_resume_refuses_a_different_config(demo_assets, uninterrupted, tmp_path):
    checkpoint = uninterrupted.run_dir / "checkpoint-2"
    run = train(
        demo_assets, tmp_path, "--resume_from_checkpoint", str(checkpoint),
        config=REPO / "plugin_configs" / "uniform.yaml",
    )  # fmt: skip
    assert run.returncode != 0
    assert "differs in: " in run.output and "tagging." in run.output
    assert "model_info:" not in run.output


def _dir_bytes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}


def test_checkpoints_hold_no_teacher(demo_assets, uninterrupted, tmp_path):
    """Same files, same tensors, same size (within 1%) as plain `swift sft`; only the small config is added."""
    plain = train(demo_assets, tmp_path, plugin=False, steps=2).check_ok()
    ours, theirs = uninterrupted.run_dir / "checkpoint-2", plain.run_dir / "checkpoint-2"
    ours_files, theirs_files = _dir_bytes(ours), _dir_bytes(theirs)
    assert set(ours_files) - set(theirs_files) == {CONFIG_FILENAME}
    ours_files.pop(CONFIG_FILENAME)
    assert sum(ours_files.values()) == pytest.approx(sum(theirs_files.values()), rel=0.01)
    keys = []
    for folder in (ours, theirs):
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            keys.append(set(f.keys()))
    assert keys[0] == keys[1] and not any("teacher" in k for k in keys[0])


def test_trained_model_loads_and_generates_without_the_plugin(uninterrupted):
    """Plain transformers in a fresh process where swift_lingudistill cannot even be imported."""
    checkpoint = uninterrupted.run_dir / "checkpoint-4"
    script = f"""
import sys
sys.modules["swift_lingudistill"] = None  # any import of the plugin now fails
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer
model = AutoModelForImageTextToText.from_pretrained({str(checkpoint)!r}, dtype=torch.float32).eval()
tokenizer = AutoTokenizer.from_pretrained({str(checkpoint)!r})
ids = tokenizer("<|im_start|>user\\nWhat is the capital of France?<|im_end|>\\n<|im_start|>assistant\\n",
                return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=4, do_sample=False)
assert out.shape[1] == ids.shape[1] + 4, out.shape
print("GENERATED", out.shape[1] - ids.shape[1])
"""
    env = {**os.environ, **OFFLINE}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "GENERATED 4" in proc.stdout, proc.stderr[-3000:]


def test_swift_infer_runs_on_the_checkpoint(demo_assets, uninterrupted, tmp_path):
    """`swift infer` re-imports the plugin named in the checkpoint's args.json (installed here)."""
    checkpoint = uninterrupted.run_dir / "checkpoint-4"
    plugins = json.loads((checkpoint / "args.json").read_text())["external_plugins"]
    assert any(p.endswith("swift_lingudistill_plugin.py") for p in plugins)
    result = tmp_path / "infer.jsonl"
    cmd = [
        swift_executable(), "infer", "--model", str(checkpoint), "--val_dataset", str(demo_assets["dataset"]),
        "--max_new_tokens", "3", "--infer_backend", "transformers", "--max_batch_size", "2", "--stream", "false",
        "--use_hf", "true", "--result_path", str(result), "--val_dataset_sample", "2",
    ]  # fmt: skip
    env = {**os.environ, **OFFLINE}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = [json.loads(line) for line in result.read_text().splitlines()]
    assert len(rows) == 2 and all("response" in row for row in rows)


def test_teacher_that_does_not_exist_fails_before_any_model_loads(demo_assets, tmp_path):
    run = train(demo_assets, tmp_path, env={"LINGUDISTILL_TEACHER": "/no/such/teacher"}, steps=1)
    assert run.returncode != 0
    assert "teacher.model '/no/such/teacher' does not exist" in run.output and "Fix:" in run.output
    assert "model_info:" not in run.output


def test_nan_teacher_skips_distillation_and_counts_it(demo_assets, tmp_path):
    """A teacher with a NaN weight: every distilled batch trains on CE only, counted in kd_skipped."""
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan_teacher"
    broken.mkdir()
    for item in Path(demo_assets["teacher"]).iterdir():
        if item.name != "model.safetensors":
            (broken / item.name).symlink_to(item)
    weights = load_file(str(Path(demo_assets["teacher"]) / "model.safetensors"))
    weights["model.layers.0.mlp.down_proj.weight"][0, 0] = torch.nan
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    run = train(
        demo_assets, tmp_path / "out", "--save_strategy", "no", env={"LINGUDISTILL_TEACHER": str(broken)}, steps=2
    ).check_ok()
    records = run.step_records()
    distilled = [r for r in records if r["distill_frac"] > 0]
    assert distilled and all(r.get("kd_skipped", 0) >= 1 and "kd_loss" not in r for r in distilled)
    assert all(r["loss"] == r["loss"] and r["grad_norm"] == r["grad_norm"] for r in records)  # finite, not NaN
    assert "the teacher gave non-finite values" in run.output
