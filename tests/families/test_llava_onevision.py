"""LLaVA-OneVision (``llava_onevision_hf``): the adapter on a tiny student (METHOD.md invariants 1-5 run on it in
tests/test_invariants.py), the per-image token count check, and the vocabulary against Qwen2 (and not Qwen2.5).
Published-config lineage: tests/test_published_pairs.py.

The batch has two images in row 0, a text-only row 1 and one image in row 2, right-padded, laid out as swift's
``llava_onevision_hf`` template lays it out (each image's ``<image>`` expanded to its full any-res feature count).
"""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from swift_lingudistill.families import family_for
from swift_lingudistill.families.llava_onevision import LlavaOnevisionFamily, image_feature_count
from swift_lingudistill.teacher import VocabularyError, shared_vocabulary
from swift_lingudistill.tiny.qwen import qwen_tokenizer
from tests.support.cases.llava_onevision import llava_onevision_case, make_llava_onevision_batch
from tests.support.tiny.llava_onevision import (
    IMAGE_TOKEN_ID,
    VIDEO_TOKEN_ID,
    llava_onevision_tokenizers,
    make_llava_onevision_processor,
)


@pytest.fixture(scope="module")
def tokenizers():
    return llava_onevision_tokenizers()  # (teacher, student)


@pytest.fixture(scope="module")
def case(tokenizers):
    return llava_onevision_case(tokenizers[1])


def test_adapter_reads_the_student_as_swift_loads_it(case):
    family, student = case.family, case.student
    assert isinstance(family, LlavaOnevisionFamily) and family_for(None, student.config) is family
    assert family.vision_token_ids(student.config) == (IMAGE_TOKEN_ID, VIDEO_TOKEN_ID)
    assert family.language_model(student) is student.model.language_model
    batch = case.batch()
    ids = batch["input_ids"]
    assert torch.equal(family.vision_mask(ids, student.config), ids == IMAGE_TOKEN_ID)
    assert torch.equal(family.rotary_positions(batch, student), torch.arange(ids.shape[1]).expand_as(ids))
    assert batch["image_sizes"].shape == (3, 2) and batch["pixel_values"].dim() == 4  # swift's 4-D crops


def test_feature_count_is_what_the_model_makes_of_each_image(case, tokenizers):
    """The check's count against the model's own features (its forward) and swift's (the processor's) count."""
    processor = make_llava_onevision_processor(tokenizers[1])
    model = case.student.model
    for width, height in ((56, 56), (84, 56), (40, 120), (200, 90)):
        crops = processor.image_processor([Image.new("RGB", (width, height))], return_tensors="pt")
        with torch.no_grad():
            features = model.get_image_features(crops["pixel_values"], crops["image_sizes"]).pooler_output[0]
        side = crops["pixel_values"].shape[-1]
        swift_count = processor._get_number_of_features(height, width, side, side)
        assert image_feature_count(case.student.config, height, width) == features.shape[0] == swift_count


def _move_one_image_token(batch: dict) -> dict:
    """Row 0's first image loses one <image> token and row 2's image gains one: the batch's total is unchanged."""
    rows = []
    for row, ids in enumerate(batch["input_ids"].tolist()):
        if row == 0:
            ids.remove(IMAGE_TOKEN_ID)
            ids.append(int(batch["input_ids"][1, -1]))  # pad at the end
        if row == 2:
            at = ids.index(IMAGE_TOKEN_ID)
            ids = [*ids[:at], IMAGE_TOKEN_ID, *ids[at:-1]]
        rows.append(ids)
    return dict(batch, input_ids=torch.tensor(rows))


def test_check_batch_stops_image_tokens_the_models_total_check_misses(case):
    family, student = case.family, case.student
    family.check_batch(case.batch(), student)
    moved = _move_one_image_token(case.batch())
    with torch.no_grad():  # transformers compares only the batch's total: this forward runs without an error
        student(**{k: moved[k] for k in case.forward_keys})
    with pytest.raises(ValueError, match=r"image 0 \(row 0 of the batch, 56x56 pixels\) has 23 <image> tokens but the "
                                         r"model makes 24 features"):  # fmt: skip
        family.check_batch(moved, student)
    no_pixels = {k: v for k, v in case.batch().items() if k not in ("pixel_values", "image_sizes")}
    with pytest.raises(ValueError, match=r"has 3 <image> placeholders \(runs of <image> tokens\) but 0 images"):
        family.check_batch(no_pixels, student)


def test_qwen2_teacher_shares_every_row_below_its_own(tokenizers, caplog):
    """Student rows 152128 against Qwen2-7B-Instruct's 152064: <image> / <video> are the student's only."""
    teacher, student = tokenizers
    with caplog.at_level(logging.WARNING, logger="swift_lingudistill.teacher"):
        assert shared_vocabulary(student, teacher, 152128, 152064) == 152064
    assert "2 token ids below 152064 are defined by only one" in caplog.text


def test_a_qwen25_teacher_is_refused_by_its_tokenizer(tokenizers):
    """Qwen2.5 put <|object_ref_start|> where LLaVA-OneVision (built on Qwen2) put <image>: 151646."""
    with pytest.raises(VocabularyError, match=r"id 151646: student '<image>' vs teacher '<\|object_ref_start\|>'"):
        shared_vocabulary(tokenizers[1], qwen_tokenizer(), 152128, 152064)


def test_batch_builder_expands_every_image_to_its_full_count(tokenizers):
    processor = make_llava_onevision_processor(tokenizers[1])
    batch = make_llava_onevision_batch(processor)
    runs = [int((row == IMAGE_TOKEN_ID).sum()) for row in batch["input_ids"]]
    sizes = batch["image_sizes"].tolist()
    counts = [processor._get_number_of_features(h, w, 28, 28) for h, w in sizes]
    assert runs == [counts[0] + counts[1], 0, counts[2]]
