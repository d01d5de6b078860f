"""The multi-process check follows accelerate's own accelerator detection, and --deepspeed without DeepSpeed names the
extra that installs it. Each backend is faked at the glue level (accelerate.utils' is_*_available helpers)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import accelerate.utils
import pytest

from swift_lingudistill.config import LinguDistillConfig
from swift_lingudistill.integration import flag_checks
from swift_lingudistill.integration.run_state import PluginUsageError

HELPERS = {
    "XLA": "is_torch_xla_available",
    "MLU": "is_mlu_available",
    "SDAA": "is_sdaa_available",
    "MUSA": "is_musa_available",
    "NPU": "is_npu_available",
    "HPU": "is_hpu_available",
    "CUDA": "is_cuda_available",
    "XPU": "is_xpu_available",
    "NEURON": "is_neuron_available",
    "MPS": "is_mps_available",
}


@pytest.fixture
def fake_device(monkeypatch):
    """fake_device('NPU'): only that accelerate helper answers True (XPU also needs xccl, as accelerate requires)."""

    def fake(name: str, xccl: bool = True) -> None:
        for device, helper in HELPERS.items():
            monkeypatch.setattr(accelerate.utils, helper, lambda *a, _on=device == name, **k: _on)
        monkeypatch.setattr(accelerate.utils, "is_xccl_available", lambda *a, **k: xccl)

    return fake


def args(**overrides) -> SimpleNamespace:
    return SimpleNamespace(**{"task_type": "causal_lm", "gradient_checkpointing": False, "use_cpu": False, **overrides})


CONFIG = LinguDistillConfig(teacher={"model": "self"})


@pytest.mark.parametrize("device", ["CUDA", "NPU", "XPU", "MLU", "MUSA", "HPU", "XLA", "NEURON", "SDAA"])
def test_several_processes_on_an_accelerator_pass(device, fake_device, monkeypatch):
    fake_device(device)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert flag_checks.accelerator() == device
    flag_checks.check_swift_flags(args(), CONFIG)  # no error


def test_cpu_ranks_without_use_cpu_get_the_use_cpu_fix(fake_device, monkeypatch):
    fake_device("none")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert flag_checks.accelerator() == "CPU"
    with pytest.raises(PluginUsageError, match=r"several CPU processes without --use_cpu true.*Fix: add --use_cpu"):
        flag_checks.check_swift_flags(args(), CONFIG)
    flag_checks.check_swift_flags(args(use_cpu=True), CONFIG)  # the fix works
    monkeypatch.setenv("WORLD_SIZE", "1")
    flag_checks.check_swift_flags(args(), CONFIG)  # one process needs nothing


def test_xpu_without_xccl_is_not_a_multi_process_backend(fake_device, monkeypatch):
    fake_device("XPU", xccl=False)
    assert flag_checks.accelerator() == "CPU"


def test_mps_gets_no_use_cpu_advice(fake_device, monkeypatch):
    fake_device("MPS")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert flag_checks.accelerator() == "MPS"
    with pytest.raises(PluginUsageError) as error:
        flag_checks.check_swift_flags(args(), CONFIG)
    assert "Apple MPS" in str(error.value) and "--use_cpu" not in str(error.value)


@pytest.mark.parametrize("device", ["NPU", "CUDA", "XPU", "MPS"])
def test_no_use_cpu_advice_on_any_accelerator(device, fake_device, monkeypatch):
    fake_device(device)
    monkeypatch.setenv("WORLD_SIZE", "4")
    try:
        flag_checks.check_swift_flags(args(), CONFIG)
    except PluginUsageError as e:
        assert "--use_cpu" not in str(e)


def test_deepspeed_without_the_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(PluginUsageError, match=r"--deepspeed zero2 .*pip install 'swift-lingudistill\[deepspeed\]'"):
        flag_checks.check_deepspeed_installed(SimpleNamespace(deepspeed="zero2"))
    flag_checks.check_deepspeed_installed(SimpleNamespace(deepspeed=None))  # no --deepspeed: nothing needed


def test_swift_checks_deepspeed_through_the_plugin_after_registration():
    from swift.arguments import SftArguments

    from swift_lingudistill.integration.registration import register

    register()
    assert getattr(SftArguments._init_deepspeed, "__lingudistill_hook__", False)
