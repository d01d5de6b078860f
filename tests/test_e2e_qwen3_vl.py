"""Qwen3-VL end to end through the real `swift sft` command (subprocesses) on a tiny student and its Qwen3 teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from swift_runs import run_sft

from swift_lingudistill.tiny.qwen3_vl import build_qwen3_vl_assets

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SELECTIVE = REPO / "plugin_configs" / "selective.yaml"
SELF_TEACHER = REPO / "plugin_configs" / "self_teacher.yaml"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    """A tiny Qwen3 LM (teacher), the degraded Qwen3-VL built from it (student), a mixed dataset: once per module."""
    return build_qwen3_vl_assets(tmp_path_factory.mktemp("qwen3_vl"))


def _language_rows_with_images(dataset: Path, out: Path) -> Path:
    """The rows that are distilled and hold an image, so text after an image (compressed positions) is checked."""
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    keep = [r for r in rows if r.get("images") and "How many" not in r["messages"][0]["content"]]
    out.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return out


def test_self_teacher_has_zero_kd_loss_at_step_one(assets, tmp_path):
    """Invariant 1 through swift (full fine-tuning, frozen copy): before the first update the copy is the student."""
    data = _language_rows_with_images(assets["dataset"], tmp_path / "with_images.jsonl")
    run = run_sft(
        assets["student"],
        data,
        tmp_path / "out",
        "--tuner_type", "full",
        "--loss_type", "lingudistill",
        config=SELF_TEACHER,
        model_type="qwen3_vl",
        steps=1,
        batch_size=4,
    ).check_ok()  # fmt: skip
    (first,) = run.step_records()
    assert first["distill_frac"] == 1
    assert abs(first["kd_loss"]) <= 1e-6  # KL is >= 0; float32 rounding may give -5e-8


def test_selective_with_a_qwen3_teacher_trains_with_lora(assets, tmp_path):
    run = run_sft(
        assets["student"],
        assets["dataset"],
        tmp_path,
        "--tuner_type", "lora",
        "--loss_type", "lingudistill",
        config=SELECTIVE,
        env={"LINGUDISTILL_TEACHER": str(assets["teacher"])},
        model_type="qwen3_vl",
        steps=2,
        batch_size=2,
    ).check_ok()  # fmt: skip
    records = run.step_records()
    assert len(records) == 2 and all(r["ce_loss"] > 0 for r in records)
    distilled = [r for r in records if r["distill_frac"] > 0]
    assert distilled and all(r["kd_loss"] > 0 for r in distilled)
