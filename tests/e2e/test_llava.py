"""LLaVA-1.5 end to end through the real `swift sft` command (subprocesses), on a tiny student and teacher."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.cases.llava import NAME, teacher_with_swapped_ids
from tests.support.e2e_checks import selective_distils, self_teacher_starts_at_zero
from tests.support.swift_runs import run_sft
from tests.support.tiny.llava import TEXT_VOCAB, build_llava_assets

pytestmark = pytest.mark.slow

SELECTIVE = REPO / "plugin_configs" / "selective.yaml"
MODEL_LOADED = "model_info:"  # swift logs this right after the student's weights load


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Vicuna-like teacher (384 ids), the LLaVA student built from it and perturbed (385 ids), 8 rows."""
    return build_llava_assets(tmp_path_factory.mktemp("llava"))


def test_self_teacher_has_zero_kd_loss_at_step_one(assets, tmp_path):
    """Invariant 1 through swift, full fine-tuning: before the first update the frozen copy is the student."""
    self_teacher_starts_at_zero(assets, tmp_path, NAME)


def test_selective_with_vicuna_teacher_trains_with_lora(assets, tmp_path):
    """A separate teacher one vocabulary row short of the student: tokenizers compared, 384 ids distilled."""
    run = selective_distils(assets, tmp_path, NAME)
    assert f"shared vocabulary: {TEXT_VOCAB})" in run.output


def test_teacher_tokenizer_disagreeing_on_shared_ids_fails_before_any_model_loads(assets, tmp_path):
    bad = teacher_with_swapped_ids(assets["teacher"], tmp_path / "swapped_vicuna", 100, 101)
    run = run_sft(
        assets["student"],
        assets["dataset"],
        tmp_path / "out",
        "--tuner_type", "lora",
        "--loss_type", "lingudistill",
        config=SELECTIVE,
        env={"LINGUDISTILL_TEACHER": str(bad)},
        model_type=NAME,
    )  # fmt: skip
    assert run.returncode != 0
    assert "VocabularyError" in run.output
    assert f"disagree on 2 of {TEXT_VOCAB} shared token ids (id 100: student" in run.output
    assert MODEL_LOADED not in run.output


def test_vicuna_teacher_model_type_is_inferred_as_llama(assets):
    from types import SimpleNamespace

    from swift_lingudistill.integration.teacher_resolution import resolve_teacher

    _, model_type = resolve_teacher(str(assets["teacher"]), None, SimpleNamespace(use_hf=True))
    assert model_type == "llama"
