"""InternVL3-hf end to end through the real `swift sft` (a subprocess): one run, through swift's ``internvl_hf``
template (tiling, ``<IMG_CONTEXT>`` expansion, its own feature placement), with a separate Qwen2.5-like teacher."""

from __future__ import annotations

from pathlib import Path

import pytest

from swift_lingudistill.tiny.qwen import build_qwen2_lm
from tests.support.e2e_checks import language_rows_with_images, separate_teacher_starts_at_zero
from tests.support.tiny.internvl import TEACHER_SIZE, build_internvl
from tests.support.tiny.qwen3_vl import build_qwen3_vl_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A Qwen2.5-like LM (152064 rows, plain RoPE), an InternVL student built from it unchanged (151674 rows,
    dynamic NTK x2 as published) and language rows with images."""
    root = tmp_path_factory.mktemp("internvl")
    teacher = build_qwen2_lm(root / "qwen2_5_lm", TEACHER_SIZE)
    student = build_internvl(root / "internvl", lm_dir=teacher)
    data = language_rows_with_images(build_qwen3_vl_dataset(root / "data"), root / "language_with_images.jsonl")
    return {"teacher": teacher, "student": student, "dataset": data}


def test_separate_teacher_reproduces_the_unchanged_student_through_swift(assets, tmp_path):
    """kd_loss 0 at step 1: swift's template, the adapter's vision positions (<img>, <IMG_CONTEXT>, </img>), the
    vocabulary slice (151674 of 152064 rows) and the dynamic-NTK lineage rule all hold in a real run."""
    run = separate_teacher_starts_at_zero(
        assets["student"], assets["teacher"], assets["dataset"], tmp_path, "internvl", "--template", "internvl_hf"
    )
    assert "shared vocabulary: 151674)" in run.output
    assert "dynamic NTK scaling changes nothing below max_position_embeddings (4096)" in run.output
