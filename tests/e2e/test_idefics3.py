"""Idefics3 end to end: the real `swift sft` command on a tiny Idefics3 and its tiny Llama 3 teacher, plus what
swift 4.6's idefics3 template does to image tokens (measured in-process on the same tiny checkpoint).

swift's collator concatenates each row's tiles, so rows whose images split into different tile counts cannot
share a batch: the runs use batch 1 with gradient accumulation 2 (later flags override run_sft's defaults).
"""

from __future__ import annotations

import pytest

from tests.support.e2e_checks import selective_distils, self_teacher_starts_at_zero
from tests.support.tiny.idefics3 import IDEFICS3_TOKEN_IDS, build_idefics3_assets

pytestmark = pytest.mark.slow

BATCH_ONE = ("--gradient_accumulation_steps", "2")
IMAGE_ID = IDEFICS3_TOKEN_IDS["<image>"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    """Tiny Llama 3 teacher (128256 rows), the Idefics3 student built from it then perturbed, a mixed dataset."""
    return build_idefics3_assets(tmp_path_factory.mktemp("idefics3"))


def test_self_teacher_full_has_zero_kd_loss_at_step_one(assets, tmp_path):
    """Invariant 1 through swift: before the first update the frozen copy is the student."""
    self_teacher_starts_at_zero(assets, tmp_path, "idefics3", *BATCH_ONE, batch_size=1)


def test_selective_lora_with_a_separate_llama_teacher_distils(assets, tmp_path):
    """A 128256-row teacher (as Llama-3.1): the three Idefics3 tokens it lacks are shared, never compared."""
    run = selective_distils(assets, tmp_path, "idefics3", *BATCH_ONE, batch_size=1)
    assert "shared vocabulary: 128256" in run.output


@pytest.fixture(scope="module")
def swift_template(assets):
    """swift's own idefics3 template over the tiny student's processor, in training mode (offline: conftest)."""
    from swift.model import get_processor
    from swift.template import get_template

    template = get_template(get_processor(str(assets["student"]), model_type="idefics3"), template_type="idefics3")
    template.set_mode("train")
    return template


@pytest.fixture(scope="module")
def student(assets):
    import torch
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(assets["student"], dtype=torch.float32)


def _encode(template, query: str, images: list[str]) -> dict:
    messages = [{"role": "user", "content": query}, {"role": "assistant", "content": "Blue."}]
    return template.encode({"messages": messages, "images": images})


@pytest.mark.parametrize(
    ("query", "lost"),
    [
        ("<image>Describe it.", 0),  # a word after <image>: expanded in full
        ("<image> Describe it.", 0),
        ("<image>\nDescribe it.", 4),  # "\n" also ends the first tile row: expansion stops there
        ("<image>1 thing.", 12),  # "1" also sits in <row_1_col_1>: nothing is inserted
        ("<image><image>Describe.", 23),  # <image> is inside the expansion: one token survives of 24
    ],
)
def test_swift_template_loses_image_tokens_and_check_batch_stops_it(assets, swift_template, student, query, lost):
    """swift 4.6's align_image_inputs stops at the first expanded token equal to the one after <image>."""
    from swift_lingudistill.families import family_for

    image = str(sorted((assets["dataset"].parent / "images").glob("*.png"))[0])  # 112x56: 1x2 tiles + global
    encoded = _encode(swift_template, query, [image] * query.count("<image>"))
    tiles = encoded["pixel_values"].shape[1]
    tokens = sum(i == IMAGE_ID for i in encoded["input_ids"])
    assert tokens == tiles * 4 - lost
    batch = swift_template.data_collator([encoded])
    family = family_for("idefics3")
    if lost:
        student(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")})  # silent upstream
        with pytest.raises(ValueError, match=rf"row 0 of the batch has {tokens} <image> tokens"):
            family.check_batch(batch, student)
    else:
        family.check_batch(batch, student)


def test_swift_collator_cannot_batch_rows_with_different_tile_counts(assets, swift_template):
    images = sorted((assets["dataset"].parent / "images").glob("*.png"))
    sizes = {}
    for path in images:
        tiles = _encode(swift_template, "<image>What is it?", [str(path)])["pixel_values"].shape[1]
        sizes.setdefault(tiles, path)
    assert len(sizes) >= 2, "the dataset should hold images that split into different tile counts"
    rows = [_encode(swift_template, "<image>What is it?", [str(p)]) for p in list(sizes.values())[:2]]
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        swift_template.data_collator(rows)
