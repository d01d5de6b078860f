"""The two end-to-end checks every family runs through the real `swift sft` (tests/e2e/test_<family>.py)."""

from __future__ import annotations

from pathlib import Path

from tests.support import REPO
from tests.support.swift_runs import SwiftRun, run_sft

SELECTIVE = REPO / "plugin_configs" / "selective.yaml"
SELF_TEACHER = REPO / "plugin_configs" / "self_teacher.yaml"


def self_teacher_starts_at_zero(
    assets: dict, out: Path, model_type: str, *extra: str, tuner: str = "full", data=None, batch_size: int = 4
) -> SwiftRun:
    """Invariant 1 through swift: before the first update the teacher snapshot is the student -> kd_loss 0."""
    run = run_sft(
        assets["student"], data or assets["dataset"], out,
        "--tuner_type", tuner, "--loss_type", "lingudistill", *extra,
        config=SELF_TEACHER, model_type=model_type, steps=1, batch_size=batch_size,
    ).check_ok()  # fmt: skip
    (first,) = run.step_records()
    assert first["distill_frac"] > 0
    assert abs(first["kd_loss"]) <= 1e-6  # KL is >= 0; float32 rounding may give -5e-8
    return run


def selective_distils(
    assets: dict, out: Path, model_type: str, *extra: str, tuner: str = "lora", steps: int = 2, batch_size: int = 2
) -> SwiftRun:
    """selective.yaml with the family's separate text-only teacher trains and distils the distilled steps."""
    run = run_sft(
        assets["student"], assets["dataset"], out,
        "--tuner_type", tuner, "--loss_type", "lingudistill", *extra,
        config=SELECTIVE, env={"LINGUDISTILL_TEACHER": str(assets["teacher"])},
        model_type=model_type, steps=steps, batch_size=batch_size,
    ).check_ok()  # fmt: skip
    records = run.step_records()
    assert len(records) == steps and all(r["ce_loss"] > 0 for r in records)
    distilled = [r for r in records if r["distill_frac"] > 0]
    assert distilled and all(r["kd_loss"] > 0 for r in distilled)
    return run


def language_rows_with_images(dataset: Path, out: Path) -> Path:
    """The rows that are distilled and hold an image (no counting question), so text after an image is checked."""
    import json

    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    keep = [r for r in rows if r.get("images") and "How many" not in r["messages"][0]["content"]]
    out.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return out


def separate_teacher_starts_at_zero(
    student: Path, teacher: Path, data: Path, out: Path, model_type: str, *extra: str, batch_size: int = 4
) -> SwiftRun:
    """A student built from ``teacher`` and not yet changed: through swift's own template and collator the separate
    teacher, reading the student's image K/V, reproduces the student's text logits (kd_loss 0 at step 1)."""
    run = run_sft(
        student, data, out, "--tuner_type", "lora", "--loss_type", "lingudistill", *extra,
        config=SELECTIVE, env={"LINGUDISTILL_TEACHER": str(teacher)}, model_type=model_type, steps=1,
        batch_size=batch_size,
    ).check_ok()  # fmt: skip
    (first,) = run.step_records()
    assert first["distill_frac"] == 1.0 and first["ce_loss"] > 0
    assert abs(first["kd_loss"]) <= 1e-6  # KL is >= 0; float32 rounding may give -5e-8
    return run
