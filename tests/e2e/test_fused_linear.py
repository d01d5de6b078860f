"""The fused-linear loss (the default) through the real `swift sft`: it trains exactly as the logits path does
(per-step loss, CE, distillation term and swift's token accuracy, over several updates, so the gradients of the
whole student, its output layer included, agree too), and it says which path it took."""

from __future__ import annotations

import pytest
import yaml

from tests.support import REPO
from tests.support.swift_runs import run_sft

pytestmark = pytest.mark.slow

UNIFORM = REPO / "plugin_configs" / "uniform.yaml"


def test_fused_linear_trains_like_the_logits_path(demo_assets, tmp_path):
    """Full fine-tuning: the output layer trains, so its gradient from the fused path is in every later step."""
    logits_config = tmp_path / "logits.yaml"
    data = yaml.safe_load(UNIFORM.read_text())
    data.setdefault("loss", {})["fused_linear"] = False
    logits_config.write_text(yaml.safe_dump(data))
    runs = {}
    for name, config in (("fused", UNIFORM), ("logits", logits_config)):
        runs[name] = run_sft(
            demo_assets["student"],
            demo_assets["dataset"],
            tmp_path / name,
            "--tuner_type", "full",
            "--loss_type", "lingudistill",
            "--learning_rate", "1e-3",
            config=config,
            env={"LINGUDISTILL_TEACHER": str(demo_assets["teacher"])},
            steps=3,
        ).check_ok()  # fmt: skip
    assert "fused-linear loss" in runs["fused"].output
    assert "reads the student's logits (loss.fused_linear is false)" in runs["logits"].output
    fused, logits = runs["fused"].step_records(), runs["logits"].step_records()
    assert len(fused) == len(logits) == 3
    assert fused[-1]["loss"] != fused[0]["loss"]  # the updates changed the student
    for got, want in zip(fused, logits, strict=True):
        for key in ("loss", "ce_loss", "kd_loss", "token_acc"):
            assert got[key] == pytest.approx(want[key], rel=2e-4, abs=1e-6), (key, got, want)
