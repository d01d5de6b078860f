"""The fused-linear path's glue: the output layer's recorder, what rules the path out, and ``--use_liger_kernel``
refused before any model loads (swift asserts liger is installed first where it is not, as on this machine)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from swift_lingudistill.config import config_from_dict
from swift_lingudistill.integration.flag_checks import check_swift_flags
from swift_lingudistill.integration.run_state import PluginUsageError
from swift_lingudistill.losses import StudentHead
from swift_lingudistill.student_head import HeadRecorder, fused_head_blocker


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.lm_head = nn.Linear(4, 11, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.body(x))
        return self.lm_head(hidden[:, 1:])  # as a VLM's forward: the kept positions only


def test_recorder_records_the_kept_hidden_states_and_restores_the_layer():
    model = TinyLM()
    x = torch.randn(2, 5, 4)
    want = model(x)
    recorder = HeadRecorder(model.lm_head)
    with recorder.recording():
        placeholder = model(x)
    assert placeholder.shape == (2, 4, 0)
    student = recorder.student()
    assert isinstance(student, StudentHead) and student.weight is model.lm_head.weight and student.bias is None
    assert student.hidden.shape == (2, 4, 4) and student.hidden.requires_grad
    torch.testing.assert_close(nn.functional.linear(student.hidden, student.weight), want)
    assert "forward" not in model.lm_head.__dict__ and torch.equal(model(x), want)  # the class's forward again


def test_recorder_keeps_an_instance_forward_and_refuses_two_calls_or_none():
    head = nn.Linear(3, 5)

    def custom(x):
        return x

    head.forward = custom
    recorder = HeadRecorder(head)
    with recorder.recording():
        head(torch.zeros(1, 3))
        with pytest.raises(RuntimeError, match="ran twice"):
            head(torch.zeros(1, 3))
    assert head.forward is custom
    with recorder.recording(), pytest.raises(RuntimeError, match="was not called"):
        recorder.student()


def test_what_rules_the_fused_path_out():
    plain = SimpleNamespace()
    assert fused_head_blocker(nn.Linear(4, 11), plain) is None
    lora = get_peft_model(TinyLM(), LoraConfig(r=2, target_modules=["lm_head"]))
    assert "not a plain torch Linear" in fused_head_blocker(lora.base_model.model.lm_head, plain)
    saved = get_peft_model(TinyLM(), LoraConfig(r=2, target_modules=["body"], modules_to_save=["lm_head"]))
    assert "modules_to_save" in fused_head_blocker(saved.base_model.model.lm_head, plain)
    sharded = nn.Linear(4, 11)
    sharded.weight.ds_id = 3  # what DeepSpeed ZeRO-3 sets on a partitioned parameter
    assert "ZeRO-3" in fused_head_blocker(sharded, plain)
    assert "final_logit_softcapping=30.0" in fused_head_blocker(
        nn.Linear(4, 11), SimpleNamespace(final_logit_softcapping=30.0)
    )


def test_liger_kernel_is_refused_with_the_reason():
    config = config_from_dict({"teacher": {"model": "self"}})
    args = SimpleNamespace(task_type="causal_lm", use_liger_kernel=True)
    with pytest.raises(PluginUsageError, match=r"--use_liger_kernel.*Fix: remove --use_liger_kernel"):
        check_swift_flags(args, config)
    check_swift_flags(SimpleNamespace(task_type="causal_lm", use_liger_kernel=False), config)
