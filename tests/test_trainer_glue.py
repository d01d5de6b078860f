"""The trainer's batch glue: tags read from `channel`, user channels handed back, packed rows split by sequence."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from swift_lingudistill.families import family_for
from swift_lingudistill.tagging import Decision, TaggingError, encode_channel
from swift_lingudistill.trainer import _FULL_LABELS, LinguDistillTrainer


def bare_trainer(padding_free: bool) -> LinguDistillTrainer:
    """The glue methods only; no model, no swift pipeline (those are covered end to end)."""
    trainer = object.__new__(LinguDistillTrainer)
    trainer.template = SimpleNamespace(padding_free=padding_free)
    # lambda > 0: a batch with a distilled sample needs the teacher (Distiller.will_distill)
    trainer.lingudistill = SimpleNamespace(
        family=family_for("qwen2_5_vl"), will_distill=lambda ctx: ctx.any_distilled, rebase=None
    )
    trainer.model = SimpleNamespace(config=SimpleNamespace(image_token_id=151655, video_token_id=151656))
    return trainer


def test_padded_batch_weights_and_user_channels():
    ids = torch.tensor([[1, 151655, 151655, 5, 6], [7, 8, 9, 0, 0]])
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        "labels": torch.tensor([[-100, -100, -100, -100, 6], [-100, 8, 9, -100, -100]]),
        "position_ids": torch.arange(5).expand(3, 2, 5),
        "channel": [encode_channel(None, Decision(0.0, "vision:counting")), encode_channel("mine", Decision(1.0, "x"))],
    }
    full_labels = torch.full((2, 5), -100)
    inputs[_FULL_LABELS] = full_labels
    ctx = bare_trainer(False)._batch_context(inputs)
    assert ctx.sample_weight.tolist() == [0.0, 1.0]
    assert ctx.token_weight.tolist() == [[0.0] * 5, [1.0] * 5]
    assert ctx.vision.tolist()[0] == [False, True, True, False, False]
    assert ctx.valid.tolist()[1] == [True, True, True, False, False]
    assert ctx.labels is full_labels and _FULL_LABELS not in inputs  # never reaches the model's forward
    assert inputs["channel"] == [None, "mine"]  # swift's --enable_channel_loss sees the user's channels


def test_channel_is_dropped_when_no_row_had_one():
    inputs = {
        "input_ids": torch.tensor([[1, 2]]),
        "labels": torch.tensor([[-100, 2]]),
        "position_ids": torch.arange(2).expand(3, 1, 2),
        "channel": [encode_channel(None, Decision(0.5, "explicit"))],
    }
    ctx = bare_trainer(False)._batch_context(inputs)
    assert "channel" not in inputs and ctx.sample_weight.tolist() == [0.5]
    assert ctx.valid.all()  # no attention_mask: every token is real


def test_packed_row_gets_one_weight_per_sequence():
    """Padding-free / packing: one channel per original sample; sequences restart their text positions at 0."""
    inputs = {
        "input_ids": torch.tensor([[11, 12, 13, 21, 22, 31, 32, 33, 34]]),
        "labels": torch.full((1, 9), -100),
        "text_position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]]),
        "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]]).expand(3, 1, 9),
        "channel": [encode_channel(None, Decision(w, "r")) for w in (1.0, 0.0, 0.25)],
    }
    ctx = bare_trainer(True)._batch_context(inputs)
    assert ctx.segment.tolist() == [[0, 0, 0, 1, 1, 2, 2, 2, 2]]
    assert ctx.token_weight.tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0, 0.25, 0.25, 0.25, 0.25]]
    assert ctx.sample_weight.tolist() == [1.0, 0.0, 0.25]


def test_untagged_rows_stop_with_the_reason():
    inputs = {"input_ids": torch.tensor([[1, 2]]), "labels": torch.tensor([[-100, 2]]), "channel": ["plain"]}
    with pytest.raises(TaggingError, match="tag"):
        bare_trainer(False)._batch_context(inputs)
    with pytest.raises(TaggingError):
        bare_trainer(False)._batch_context({"input_ids": torch.tensor([[1, 2]]), "labels": torch.tensor([[1, 2]])})
