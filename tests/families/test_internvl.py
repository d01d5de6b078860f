"""InternVL3-hf (``internvl``): the adapter on a tiny student (METHOD.md invariants 1-5 run on it in
tests/test_invariants.py), the image-token count check swift's template needs, the vocabulary against a Qwen2.5
teacher, and the language models the adapter refuses. Published-config lineage: tests/test_published_pairs.py.

The batch has two images in row 0 (1 + 3 tiles), a text-only row 1 and one image in row 2 (3 tiles), right-padded,
laid out as swift's ``internvl_hf`` template lays it out: ``<img>``, 4 ``<IMG_CONTEXT>`` a tile, ``</img>\\n``.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import InternVLConfig

from swift_lingudistill.families import family_for
from swift_lingudistill.families.internvl import InternVLFamily, InternVLUnsupportedConfigError
from swift_lingudistill.teacher import shared_vocabulary
from swift_lingudistill.tiny.qwen import qwen_tokenizer
from tests.support.cases.internvl import NAME, internvl_case
from tests.support.tiny.internvl import INTERNVL_VOCAB, TOKENS_PER_TILE, internvl_tokenizer

IMG_CONTEXT, IMG_START, IMG_END = 151667, 151665, 151666


@pytest.fixture(scope="module")
def tokenizer():
    return internvl_tokenizer()


@pytest.fixture(scope="module")
def case(tokenizer):
    return internvl_case(tokenizer)


def test_adapter_reads_the_student_as_swift_loads_it(case, tokenizer):
    family, student = case.family, case.student
    assert isinstance(family, InternVLFamily) and family_for(None, student.config) is family
    assert tokenizer.convert_tokens_to_ids(["<img>", "</img>", "<IMG_CONTEXT>"]) == [IMG_START, IMG_END, IMG_CONTEXT]
    assert family.vision_token_ids(student.config) == (IMG_CONTEXT, IMG_START, IMG_END)
    assert family.language_model(student) is student.model.language_model
    batch = case.batch()
    ids = batch["input_ids"]
    assert (ids == IMG_CONTEXT).sum(dim=1).tolist() == [(1 + 3) * TOKENS_PER_TILE, 0, 3 * TOKENS_PER_TILE]
    assert batch["pixel_values"].shape[0] == 1 + 3 + 3 and "position_ids" not in batch
    vision = family.vision_mask(ids, student.config)
    assert torch.equal(vision, (ids == IMG_CONTEXT) | (ids == IMG_START) | (ids == IMG_END))
    assert vision.sum(dim=1).tolist() == [16 + 2 * 2, 0, 12 + 2]  # the <img> ... </img> markers are shared too
    assert torch.equal(family.rotary_positions(batch, student), torch.arange(ids.shape[1]).expand_as(ids))


def _drop_context_tokens(batch: dict, row: int, count: int) -> dict:
    """Row ``row`` with ``count`` <IMG_CONTEXT> tokens removed (a processor whose image_seq_length is too small)."""
    ids, labels, mask = batch["input_ids"].clone(), batch["labels"].clone(), batch["attention_mask"].clone()
    keep = torch.ones(ids.shape[1], dtype=torch.bool)
    keep[(ids[row] == IMG_CONTEXT).nonzero().flatten()[:count]] = False
    for tensor, pad in ((ids, int(ids[1, -1])), (labels, -100), (mask, 0)):
        kept = tensor[row][keep]
        tensor[row] = torch.cat([kept, kept.new_full((count,), pad)])
    return dict(batch, input_ids=ids, labels=labels, attention_mask=mask)


def test_check_batch_stops_too_few_image_tokens_which_swift_would_train_on(case):
    """swift's template places the features with masked_scatter and checks nothing: with fewer <IMG_CONTEXT> tokens
    than features it trains on misplaced features (measured: a processor with image_seq_length 2 for 4 features a
    tile trains through `swift sft`). The adapter's check names the counts and the fix."""
    family = case.family
    family.check_batch(case.batch(), case.student)  # a right batch passes
    text_only = {k: v[1:2] for k, v in case.batch().items() if k != "pixel_values"}
    family.check_batch(text_only, case.student)
    short = _drop_context_tokens(case.batch(), row=2, count=TOKENS_PER_TILE)
    with pytest.raises(ValueError, match=r"has 24 <IMG_CONTEXT> tokens but its 7 image tiles produce 28 image "):
        family.check_batch(short, case.student)
    no_pixels = {k: v for k, v in case.batch().items() if k != "pixel_values"}
    with pytest.raises(ValueError, match=r"has 28 <IMG_CONTEXT> tokens but its 0 image tiles"):
        family.check_batch(no_pixels, case.student)


def test_qwen25_teacher_tokenizer_shares_the_students_rows(tokenizer, caplog):
    """InternVL3's 151674 rows against Qwen2.5's 152064: the first 151674 are compared; the nine InternVL tokens
    (151665-151673) exist only on the student's side (the teacher's rows there are untrained padding)."""
    with caplog.at_level(logging.WARNING, logger="swift_lingudistill.teacher"):
        assert shared_vocabulary(tokenizer, qwen_tokenizer(), INTERNVL_VOCAB, 152064) == INTERNVL_VOCAB
    assert "9 token ids below 151674 are defined by only one" in caplog.text


def test_untested_language_models_are_refused_before_any_weights_load():
    """InternVL3.5-*-HF (Qwen3 or GPT-OSS language models) shares the model_type but is not checked yet."""
    family = family_for(NAME)
    family.lineage(InternVLConfig())  # the default text config is Qwen2, as InternVL3's
    for text in ({"model_type": "qwen3"}, {"model_type": "gpt_oss"}):
        with pytest.raises(InternVLUnsupportedConfigError, match=f"this checkpoint's is '{text['model_type']}'"):
            family.lineage(InternVLConfig(text_config=text))
