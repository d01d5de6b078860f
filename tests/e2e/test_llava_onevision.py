"""LLaVA-OneVision end to end through the real `swift sft` (a subprocess): one run, through swift's
``llava_onevision_hf`` template (any-res crops, ``<image>`` 151646 expanded per image), with a Qwen2 teacher."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.e2e_checks import language_rows_with_images, separate_teacher_starts_at_zero
from tests.support.tiny.llava_onevision import build_llava_onevision, build_qwen2_original_lm
from tests.support.tiny.qwen3_vl import build_qwen3_vl_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A Qwen2 LM (152064 rows, Qwen2's three-special tokenizer), a LLaVA-OneVision student built from it unchanged
    (152128 rows) and language rows with one image each (swift's collator cannot batch 1- and 2-image rows)."""
    root = tmp_path_factory.mktemp("llava_onevision")
    teacher = build_qwen2_original_lm(root / "qwen2_lm")
    student = build_llava_onevision(root / "llava_onevision", lm_dir=teacher)
    data = language_rows_with_images(build_qwen3_vl_dataset(root / "data"), root / "language_with_images.jsonl")
    return {"teacher": teacher, "student": student, "dataset": data}


def test_separate_teacher_reproduces_the_unchanged_student_through_swift(assets, tmp_path):
    """kd_loss 0 at step 1 with a batch of 4 image rows: swift's any-res expansion, the adapter's per-image count
    check and the vocabulary slice (152064 of 152128 rows) all hold in a real run."""
    run = separate_teacher_starts_at_zero(
        assets["student"], assets["teacher"], assets["dataset"], tmp_path, "llava_onevision_hf"
    )
    assert "shared vocabulary: 152064)" in run.output
