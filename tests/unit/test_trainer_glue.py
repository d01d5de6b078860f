"""The trainer's batch glue: tags read from `channel`, user channels handed back, packed rows split by sequence."""

from __future__ import annotations

import pytest
import torch

from swift_lingudistill.integration.trainer import FULL_LABELS_KEY, batch_context
from swift_lingudistill.tagging import Decision, TaggingError, encode_channel


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
    inputs[FULL_LABELS_KEY] = full_labels
    ctx = batch_context(inputs, False)
    assert ctx.sample_weight.tolist() == [0.0, 1.0]
    assert ctx.token_weight.tolist() == [[0.0] * 5, [1.0] * 5]
    assert ctx.valid.tolist()[1] == [True, True, True, False, False]
    assert ctx.labels is full_labels and FULL_LABELS_KEY not in inputs  # never reaches the model's forward
    assert inputs["channel"] == [None, "mine"]  # swift's --enable_channel_loss sees the user's channels


def test_channel_is_dropped_when_no_row_had_one():
    inputs = {
        "input_ids": torch.tensor([[1, 2]]),
        "labels": torch.tensor([[-100, 2]]),
        "position_ids": torch.arange(2).expand(3, 1, 2),
        "channel": [encode_channel(None, Decision(0.5, "explicit"))],
    }
    ctx = batch_context(inputs, False)
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
    ctx = batch_context(inputs, True)
    assert ctx.segment.tolist() == [[0, 0, 0, 1, 1, 2, 2, 2, 2]]
    assert ctx.token_weight.tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0, 0.25, 0.25, 0.25, 0.25]]
    assert ctx.sample_weight.tolist() == [1.0, 0.0, 0.25]


def test_untagged_rows_stop_with_the_reason():
    inputs = {"input_ids": torch.tensor([[1, 2]]), "labels": torch.tensor([[-100, 2]]), "channel": ["plain"]}
    with pytest.raises(TaggingError, match="tag"):
        batch_context(inputs, False)
    with pytest.raises(TaggingError):
        batch_context({"input_ids": torch.tensor([[1, 2]]), "labels": torch.tensor([[1, 2]])}, False)
