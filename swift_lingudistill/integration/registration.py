"""What importing the plugin installs in ms-swift: the loss type, the monitor callback and three hooks.

- ``--loss_type lingudistill`` in ``swift.loss.loss_map`` and ``--callbacks lingudistill_monitor`` in
  ``swift.callbacks.callbacks_map``;
- the trainer factory: with that loss type, ``swift sft`` builds ``LinguDistillTrainer``;
- the pipeline: ``activate`` validates the config, the flags and the teacher before any model loads;
- the dataset loader: every row is tagged as it loads (``dataset_tagging``);
- the lazy dataset: rows swift drops or replaces while training are counted (``row_guard``);
- argument parsing: ``--deepspeed`` without the optional deepspeed package names the extra that installs it
  (swift imports this plugin while it parses its arguments, just before it checks DeepSpeed).
"""

from __future__ import annotations

from typing import Any

from .activation import activate
from .dataset_tagging import install_dataset_hook
from .flag_checks import check_deepspeed_installed
from .monitor import LanguageMonitor
from .row_guard import install_row_guard
from .run_state import LOSS_TYPE, MONITOR_CALLBACK
from .trainer import LinguDistillLoss, LinguDistillTrainer
from .version import check_swift_version

__all__ = ["register"]

_HOOK_MARK = "__lingudistill_hook__"


def register() -> None:
    """Install the loss type, the callback and the trainer, pipeline and dataset hooks (idempotent)."""
    check_swift_version()
    from swift.callbacks import callbacks_map
    from swift.loss import loss_map

    _register_once(loss_map, LOSS_TYPE, LinguDistillLoss, "loss_type")
    _register_once(callbacks_map, MONITOR_CALLBACK, LanguageMonitor, "callback")
    _patch_trainer_factory()
    _patch_pipeline()
    _patch_deepspeed_requirement()
    install_dataset_hook()
    install_row_guard()


def _register_once(registry: dict, name: str, value: Any, kind: str) -> None:
    existing = registry.get(name)
    if existing is not None and existing is not value:
        # swift's registries silently overwrite; a clash must be loud.
        raise RuntimeError(f"{kind} {name!r} is already registered by {existing!r}")
    registry[name] = value


def _patch_trainer_factory() -> None:
    from swift.trainers import TrainerFactory

    original = TrainerFactory.get_trainer_cls.__func__
    if getattr(original, _HOOK_MARK, False):
        return

    def get_trainer_cls(cls, args):
        if getattr(args, "loss_type", None) == LOSS_TYPE and not hasattr(args, "rlhf_type"):
            return LinguDistillTrainer
        return original(cls, args)

    setattr(get_trainer_cls, _HOOK_MARK, True)
    TrainerFactory.get_trainer_cls = classmethod(get_trainer_cls)


def _patch_pipeline() -> None:
    from swift.pipelines.train.sft import SwiftSft

    original = SwiftSft._prepare_model_tokenizer
    if getattr(original, _HOOK_MARK, False):
        return

    def _prepare_model_tokenizer(self, *args, **kwargs):
        if getattr(self, "_lingudistill_checked", None) is None:
            self._lingudistill_checked = True
            activate(self.args)
        return original(self, *args, **kwargs)

    setattr(_prepare_model_tokenizer, _HOOK_MARK, True)
    SwiftSft._prepare_model_tokenizer = _prepare_model_tokenizer


def _patch_deepspeed_requirement() -> None:
    from swift.arguments import SftArguments

    original = SftArguments._init_deepspeed
    if getattr(original, _HOOK_MARK, False):
        return

    def _init_deepspeed(self):
        check_deepspeed_installed(self)
        return original(self)

    setattr(_init_deepspeed, _HOOK_MARK, True)
    SftArguments._init_deepspeed = _init_deepspeed
