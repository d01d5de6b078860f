"""`--callbacks lingudistill_monitor`: eval_lang_ppl / eval_lang_kl / eval_lang_teacher_ppl at the start and at each
evaluation, filed under eval/ in tensorboard, usable as --metric_for_best_model, and their plot at the end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from swift_lingudistill.integration.monitor import PLOT_FILENAME
from tests.support import REPO
from tests.support.swift_runs import run_sft

pytestmark = pytest.mark.slow

EVAL = ("--split_dataset_ratio", "0.25", "--eval_strategy", "steps", "--eval_steps", "1")


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


def measured(run) -> list[dict]:
    return [r for r in run.log_records() if "eval_lang_ppl" in r and "global_step/max_steps" in r]


def tensorboard_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in run_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def test_monitor_logs_evaluation_metrics_from_step_0_and_plots(demo_assets, tmp_path):
    config = config_with_monitor(tmp_path, demo_assets["teacher"], demo_assets["monitor"])
    best = ("--metric_for_best_model", "lang_ppl", "--greater_is_better", "false")
    run = monitored_run(
        demo_assets, tmp_path, config, "--report_to", "tensorboard", "--save_strategy", "steps", "--save_steps", "1",
        *best,
    ).check_ok()  # fmt: skip
    points = measured(run)
    assert [r["global_step/max_steps"] for r in points] == ["0/2", "1/2", "2/2"]  # step 0, then each evaluation
    for record in points:
        assert math.isfinite(record["eval_lang_ppl"]) and record["eval_lang_ppl"] > 1
        assert record["eval_lang_kl"] > 0  # a separate teacher differs from the (perturbed) student
        assert record["eval_lang_teacher_ppl"] == points[0]["eval_lang_teacher_ppl"]  # the frozen teacher's, once
    assert not [r for r in run.log_records() if "lang_ppl" in r]  # no train-side names
    assert {"eval/lang_ppl", "eval/lang_kl", "eval/lang_teacher_ppl"} <= tensorboard_tags(run.run_dir)
    # --metric_for_best_model lang_ppl reads the monitor's value from the evaluation's metrics
    summary = next(r for r in run.log_records() if "best_metric" in r)
    assert summary["best_metric"] == pytest.approx(min(r["eval_lang_ppl"] for r in points[1:]), rel=1e-6)
    plot = run.run_dir / PLOT_FILENAME
    assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_self_teacher_before_any_update_is_at_zero_kl_and_on_its_own_reference(demo_assets, tmp_path):
    """With learning rate 0 the student stays the snapshot: lang_kl is 0, lang_ppl does not move, and the
    teacher's perplexity (the plot's reference line) is the student's own."""
    config = config_with_monitor(tmp_path, "self", demo_assets["monitor"])
    run = monitored_run(demo_assets, tmp_path, config, "--learning_rate", "0", "--eval_on_start", "true").check_ok()
    points = measured(run)
    assert [r["global_step/max_steps"] for r in points] == ["0/2", "1/2", "2/2"]  # --eval_on_start: no extra point
    assert all(abs(r["eval_lang_kl"]) <= 1e-6 for r in points)
    for record in points:
        assert record["eval_lang_ppl"] == pytest.approx(points[0]["eval_lang_ppl"], rel=1e-6)
        assert record["eval_lang_teacher_ppl"] == pytest.approx(record["eval_lang_ppl"], rel=1e-5)


@pytest.mark.parametrize("with_callback", [True, False])
def test_monitor_half_configured_fails_fast(demo_assets, tmp_path, with_callback):
    if with_callback:  # the callback without a held-out set
        config = REPO / "plugin_configs" / "self_teacher.yaml"
        run = monitored_run(demo_assets, tmp_path, config)
        message = "needs monitor.dataset"
    else:  # a held-out set without the callback
        config = config_with_monitor(tmp_path, "self", demo_assets["monitor"])
        run = run_sft(
            demo_assets["student"], demo_assets["dataset"], tmp_path / "out", "--loss_type", "lingudistill",
            config=config,
        )  # fmt: skip
        message = "monitor.dataset is set but --callbacks lingudistill_monitor is not"
    assert run.returncode != 0 and message in run.output and "model_info:" not in run.output
