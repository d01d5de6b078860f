"""`--callbacks lingudistill_monitor`: lang_ppl and lang_kl at each evaluation, and their plot at the end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from swift_lingudistill.integration.monitor import PLOT_FILENAME
from tests.support import REPO
from tests.support.swift_runs import run_sft

pytestmark = pytest.mark.slow

EVAL = ("--split_dataset_ratio", "0.25", "--eval_strategy", "steps", "--eval_steps", "1")


@pytest.fixture(scope="module")
def held_out(demo_assets, tmp_path_factory) -> Path:
    rows = [json.loads(line) for line in Path(demo_assets["dataset"]).read_text().splitlines()]
    text_only = [{"messages": r["messages"]} for r in rows if not r.get("images")]
    path = tmp_path_factory.mktemp("held_out") / "text.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in text_only))
    return path


def config_with_monitor(tmp_path: Path, teacher: str, held_out: Path) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(f"teacher:\n  model: {teacher}\nmonitor:\n  dataset: {held_out}\n  max_samples: 6\n")
    return path


def monitored_run(assets, tmp_path, config, *extra, steps=2):
    return run_sft(
        assets["student"], assets["dataset"], tmp_path / "out",
        "--tuner_type", "lora", "--loss_type", "lingudistill", "--callbacks", "lingudistill_monitor", *EVAL, *extra,
        config=config, steps=steps,
    )  # fmt: skip


def test_monitor_logs_and_plots(demo_assets, tmp_path, held_out):
    run = monitored_run(demo_assets, tmp_path, config_with_monitor(tmp_path, demo_assets["teacher"], held_out))
    run.check_ok()
    measured = [r for r in run.log_records() if "lang_ppl" in r]
    assert len(measured) == 2  # one per evaluation (eval_steps 1, 2 steps)
    for record in measured:
        assert math.isfinite(record["lang_ppl"]) and record["lang_ppl"] > 1
        assert record["lang_kl"] > 0  # a separate teacher differs from the (perturbed) student
    assert "'lang_ppl'" in run.output and "'lang_kl'" in run.output  # swift's own log lines
    plot = run.run_dir / PLOT_FILENAME
    assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_self_teacher_before_any_update_is_at_zero_kl(demo_assets, tmp_path, held_out):
    """With learning rate 0 the student stays the snapshot: lang_kl is 0 and lang_ppl does not move."""
    run = monitored_run(
        demo_assets, tmp_path, config_with_monitor(tmp_path, "self", held_out), "--learning_rate", "0"
    ).check_ok()
    measured = [r for r in run.log_records() if "lang_ppl" in r]
    assert len(measured) == 2 and all(abs(r["lang_kl"]) <= 1e-6 for r in measured)
    assert measured[0]["lang_ppl"] == pytest.approx(measured[1]["lang_ppl"], rel=1e-6)


@pytest.mark.parametrize("with_callback", [True, False])
def test_monitor_half_configured_fails_fast(demo_assets, tmp_path, held_out, with_callback):
    if with_callback:  # the callback without a held-out set
        config = REPO / "plugin_configs" / "self_teacher.yaml"
        run = monitored_run(demo_assets, tmp_path, config)
        message = "needs monitor.dataset"
    else:  # a held-out set without the callback
        config = config_with_monitor(tmp_path, "self", held_out)
        run = run_sft(
            demo_assets["student"], demo_assets["dataset"], tmp_path / "out", "--loss_type", "lingudistill",
            config=config,
        )  # fmt: skip
        message = "monitor.dataset is set but --callbacks lingudistill_monitor is not"
    assert run.returncode != 0 and message in run.output and "model_info:" not in run.output
