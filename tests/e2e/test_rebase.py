"""Rotary re-basing end to end through the real `swift sft` (a subprocess): a Qwen3-VL student at Qwen3-VL's
published base (5,000,000) with a Qwen3 teacher at Qwen3's (1,000,000), the pair the lineage check used to refuse.
Exactness is proven in-process (tests/test_rotary_rebase.py); this run proves the plumbing: swift's [3, B, L]
positions reach the re-based keys, the run says it re-bases, and it trains."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from swift_lingudistill.tiny.common import TinySize
from tests.support.e2e_checks import SELECTIVE, language_rows_with_images
from tests.support.swift_runs import run_sft
from tests.support.tiny.qwen3_vl import build_qwen3_lm, build_qwen3_vl, build_qwen3_vl_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rebase")
    teacher = build_qwen3_lm(root / "qwen3_lm", TinySize(rope_theta=1_000_000.0))
    student = build_qwen3_vl(root / "qwen3_vl", TinySize(rope_theta=5_000_000.0), lm_dir=teacher, perturb=0.5)
    data = language_rows_with_images(build_qwen3_vl_dataset(root / "data"), root / "language_with_images.jsonl")
    return {"teacher": teacher, "student": student, "dataset": data}


def test_a_teacher_at_another_rotary_base_trains_with_rebased_keys(assets, tmp_path):
    run = run_sft(
        assets["student"], assets["dataset"], tmp_path, "--tuner_type", "lora", "--loss_type", "lingudistill",
        config=SELECTIVE, env={"LINGUDISTILL_TEACHER": str(assets["teacher"])}, model_type="qwen3_vl", steps=1,
    ).check_ok()  # fmt: skip
    assert "the teacher rotates at base 1e+06, the student at 5e+06; the shared keys are re-based exactly" in run.output
    (first,) = run.step_records()
    assert first["distill_frac"] == 1.0 and math.isfinite(first["kd_loss"]) and first["kd_loss"] > 0
