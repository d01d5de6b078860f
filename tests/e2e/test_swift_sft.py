"""End to end through the real `swift sft` command (subprocesses), on the demo's tiny models and data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from swift_lingudistill import plugin_path
from swift_lingudistill.integration.run_state import CONFIG_FILENAME
from swift_lingudistill.tiny import TinySize, build_qwen2_lm
from tests.support import REPO
from tests.support.swift_runs import run_sft, run_sft_yaml

pytestmark = pytest.mark.slow

SELECTIVE = REPO / "plugin_configs" / "selective.yaml"
SELF_TEACHER = REPO / "plugin_configs" / "self_teacher.yaml"
MODEL_LOADED = "model_info:"  # swift logs this right after the student's weights load


def teacher_env(assets: dict) -> dict:
    return {"LINGUDISTILL_TEACHER": str(assets["teacher"])}


@pytest.mark.parametrize("tuner", ["full", "lora"])
def test_selective_trains_and_logs_its_metrics(demo_assets, tmp_path, tuner):
    run = run_sft(
        demo_assets["student"],
        demo_assets["dataset"],
        tmp_path,
        "--tuner_type", tuner,
        "--loss_type", "lingudistill",
        config=SELECTIVE,
        env=teacher_env(demo_assets),
        steps=3,
    ).check_ok()  # fmt: skip
    records = run.step_records()
    assert len(records) == 3
    for record in records:
        assert {"ce_loss", "distill_frac", "loss"} <= record.keys()
        assert 0.0 <= record["distill_frac"] <= 1.0
        assert record["ce_loss"] > 0
    distilled = [r for r in records if r["distill_frac"] > 0]
    assert distilled and all(r["kd_loss"] > 0 for r in distilled)
    # swift's own log lines carry the metrics too
    assert "'kd_loss'" in run.output and "'distill_frac'" in run.output and "'ce_loss'" in run.output
    # the resolved config is logged and written next to args.json: the teacher's model_type filled in, the
    # teacher named as the config names it (${LINGUDISTILL_TEACHER}), never by the variable's value
    saved = run.run_dir / CONFIG_FILENAME
    assert (run.run_dir / "args.json").exists() and saved.exists()
    resolved = yaml.safe_load(saved.read_text())
    assert resolved["teacher"]["model"] == "${LINGUDISTILL_TEACHER}" and resolved["teacher"]["model_type"] == "qwen2"
    assert str(demo_assets["teacher"]) not in saved.read_text()
    assert resolved["loss"]["lambda"] == 1.0 and resolved["kv_share"]["scope"] == "image"
    assert "LinguDistill config" in run.output


@pytest.mark.parametrize("tuner", ["full", "lora"])
def test_self_teacher_has_zero_kd_loss_at_step_one(demo_assets, tmp_path, tuner):
    """Invariant 1 through swift: before the first update the snapshot is the student."""
    run = run_sft(
        demo_assets["student"],
        demo_assets["dataset"],
        tmp_path,
        "--tuner_type", tuner,
        "--loss_type", "lingudistill",
        config=SELF_TEACHER,
        steps=1,
        batch_size=4,
    ).check_ok()  # fmt: skip
    (first,) = run.step_records()
    assert first["distill_frac"] > 0
    assert abs(first["kd_loss"]) <= 1e-6  # KL is >= 0; float32 rounding may give -5e-8


def test_config_named_through_model_kwargs(demo_assets, tmp_path):
    """swift turns --model_kwargs keys into environment variables: the config can be named there."""
    run = run_sft(
        demo_assets["student"],
        demo_assets["dataset"],
        tmp_path,
        "--tuner_type", "lora",
        "--loss_type", "lingudistill",
        "--model_kwargs", f'{{"lingudistill_config": "{SELF_TEACHER}"}}',
        steps=1,
    ).check_ok()  # fmt: skip
    assert (run.run_dir / CONFIG_FILENAME).exists()


def test_config_named_in_a_swift_yaml_env_block(demo_assets, tmp_path):
    """`swift sft config.yaml` with `ENV: {LINGUDISTILL_CONFIG: ...}` (swift exports the block itself)."""
    run = run_sft_yaml(
        {
            "ENV": {"LINGUDISTILL_CONFIG": str(SELECTIVE), "LINGUDISTILL_TEACHER": str(demo_assets["teacher"])},
            "model": str(demo_assets["student"]),
            "model_type": "qwen2_5_vl",
            "template": "qwen2_5_vl",
            "dataset": str(demo_assets["dataset"]),
            "output_dir": str(tmp_path / "out"),
            "tuner_type": "lora",
            "max_steps": 1,
            "per_device_train_batch_size": 4,
            "external_plugins": plugin_path(),
            "loss_type": "lingudistill",
        },
        tmp_path / "sft.yaml",
    ).check_ok()
    (record,) = run.step_records()
    assert record["kd_loss"] > 0 and (run.run_dir / CONFIG_FILENAME).exists()


def test_bad_config_fails_before_any_model_loads(demo_assets, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"teacher": {"model": "self"}, "loss": {"temperature": -2, "lamda": 0.5}, "kv_share": {"scope": "text"}}
        )
    )
    run = run_sft(
        demo_assets["student"], demo_assets["dataset"], tmp_path / "out", "--loss_type", "lingudistill", config=bad
    )
    assert run.returncode != 0
    assert "loss.temperature = -2" in run.output and "greater than 0" in run.output
    assert "loss.lamda: unknown key (did you mean `lambda`?)" in run.output
    assert "kv_share.scope = 'text'" in run.output
    assert MODEL_LOADED not in run.output


def test_mismatched_teacher_fails_before_any_model_loads(demo_assets, tmp_path):
    wrong = build_qwen2_lm(tmp_path / "wrong_lm", TinySize(layers=3, kv_heads=4, rope_theta=10000.0))
    run = run_sft(
        demo_assets["student"],
        demo_assets["dataset"],
        tmp_path / "out",
        "--loss_type", "lingudistill",
        config=SELECTIVE,
        env={"LINGUDISTILL_TEACHER": str(wrong)},
    )  # fmt: skip
    assert run.returncode != 0
    assert "does not match the student's language model" in run.output
    for line in ("layers           student 2", "kv_heads         student 2", "rotary_base"):
        assert line in run.output
    assert "hidden_size" not in run.output.split("does not match")[1].split("Fix:")[0]  # only mismatches listed
    assert MODEL_LOADED not in run.output


@pytest.mark.parametrize(
    ("loss_type", "config", "message"),
    [
        ("lingudistill", None, "--loss_type lingudistill needs a plugin config"),
        ("cross_entropy", SELF_TEACHER, "the config would be ignored"),
    ],
)
def test_loss_type_and_config_must_come_together(demo_assets, tmp_path, loss_type, config, message):
    run = run_sft(demo_assets["student"], demo_assets["dataset"], tmp_path, "--loss_type", loss_type, config=config)
    assert run.returncode != 0 and message in run.output
    assert MODEL_LOADED not in run.output


def _explicit_dataset(path: Path, demo_dataset: Path, pattern: list[bool]) -> Path:
    """The demo rows with an explicit `distill` tag each, so the expected share of distilled samples is known."""
    import json

    rows = [json.loads(line) for line in demo_dataset.read_text().splitlines()][: len(pattern)]
    for row, distill in zip(rows, pattern, strict=True):
        row["distill"] = distill
        row.pop("category", None)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tags_reach_the_loss_through_lazy_tokenization_and_workers(demo_assets, tmp_path):
    """Each sample is seen once in the epoch: the per-batch distill_frac must add up to the tags, exactly."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pattern = [True, False, False, True, True, False, False, False, True, False, True, False]
    data = _explicit_dataset(tmp_path / "tagged.jsonl", demo_assets["dataset"], pattern)
    run = run_sft(
        demo_assets["student"],
        data,
        tmp_path / "out",
        "--tuner_type", "lora",
        "--loss_type", "lingudistill",
        "--dataloader_num_workers", "2",
        "--lazy_tokenize", "true",
        "--report_to", "tensorboard",
        config=SELECTIVE,
        env=teacher_env(demo_assets),
        steps=6,
        batch_size=2,
    ).check_ok()  # fmt: skip
    records = run.step_records()
    assert len(records) == 6
    assert round(sum(r["distill_frac"] * 2 for r in records)) == sum(pattern)
    assert all(("kd_loss" in r) == (r["distill_frac"] > 0) for r in records)  # no distilled sample, no kd term
    events = EventAccumulator(str(next(run.run_dir.glob("runs/*")))).Reload()
    assert {"train/ce_loss", "train/kd_loss", "train/distill_frac"} <= set(events.Tags()["scalars"])


def test_evaluation_logs_the_same_metrics(demo_assets, tmp_path):
    run = run_sft(
        demo_assets["student"],
        demo_assets["dataset"],
        tmp_path,
        "--tuner_type", "lora",
        "--loss_type", "lingudistill",
        "--split_dataset_ratio", "0.25",
        "--eval_strategy", "steps",
        "--eval_steps", "2",
        config=SELECTIVE,
        env=teacher_env(demo_assets),
        steps=2,
    ).check_ok()  # fmt: skip
    evals = [r for r in run.log_records() if "eval_loss" in r]
    assert evals and {"eval_ce_loss", "eval_distill_frac"} <= evals[0].keys()


def test_gradient_accumulation_normalises_like_one_big_batch(demo_assets, tmp_path):
    """(CE + KD) / num_items_in_batch over the accumulated micro-batches: batch 4 == 2 x 2 accumulated."""
    uniform = REPO / "plugin_configs" / "uniform.yaml"
    losses = []
    for batch, accumulation in ((4, 1), (2, 2)):
        run = run_sft(
            demo_assets["student"],
            demo_assets["dataset"],
            tmp_path / f"b{batch}",
            "--tuner_type", "full",
            "--loss_type", "lingudistill",
            "--gradient_accumulation_steps", str(accumulation),
            config=uniform,
            env=teacher_env(demo_assets),
            steps=1,
            batch_size=batch,
        ).check_ok()  # fmt: skip
        (record,) = run.step_records()
        losses.append(record)
    assert losses[0]["kd_loss"] > 0
    assert losses[0]["loss"] == pytest.approx(losses[1]["loss"], rel=1e-4)
    assert losses[0]["kd_loss"] == pytest.approx(losses[1]["kd_loss"], rel=1e-3)
