"""Qwen3-VL end to end through the real `swift sft` command (subprocesses) on a tiny student and its Qwen3 teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.e2e_checks import selective_distils, self_teacher_starts_at_zero
from tests.support.tiny.qwen3_vl import build_qwen3_vl_assets

pytestmark = pytest.mark.slow


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
    """Invariant 1 through swift (full fine-tuning, frozen copy) on rows with images only, so text after an image
    (compressed M-RoPE positions) is checked."""
    data = _language_rows_with_images(assets["dataset"], tmp_path / "with_images.jsonl")
    self_teacher_starts_at_zero(assets, tmp_path / "out", "qwen3_vl", data=data)


def test_selective_with_a_qwen3_teacher_trains_with_lora(assets, tmp_path):
    selective_distils(assets, tmp_path, "qwen3_vl")
