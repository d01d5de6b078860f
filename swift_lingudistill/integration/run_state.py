"""The state of one ``swift sft`` run with LinguDistill: a leaf module, it imports nothing of the swift glue.

swift builds the trainer, the loss, the callbacks and the datasets itself, so what ``activation.activate``
decided after argument parsing reaches them here: the accepted run (read by the trainer and the monitor) and
the tagger in use while datasets load (read by the dataset hook).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import LinguDistillConfig
from ..families import FamilyAdapter
from ..tagging import Tagger

__all__ = [
    "CONFIG_FILENAME",
    "LOSS_TYPE",
    "MONITOR_CALLBACK",
    "PluginUsageError",
    "RunState",
    "active_run",
    "active_tagging",
    "set_active_run",
    "set_active_tagging",
]

LOSS_TYPE = "lingudistill"
MONITOR_CALLBACK = "lingudistill_monitor"
CONFIG_FILENAME = "lingudistill_config.yaml"


class PluginUsageError(ValueError):
    """The swift command line and the plugin config do not fit together (raised before any model loads)."""


@dataclass
class RunState:
    """What one ``swift sft`` run with LinguDistill carries from argument parsing to the trainer."""

    config: LinguDistillConfig
    config_path: str
    args: Any  # swift's SftArguments
    family: FamilyAdapter
    tagger: Tagger
    teacher_dir: str | None = None  # None for `self`
    teacher_model_type: str | None = None
    shared_vocab: int | None = None
    rotary_rebase: bool = False  # the teacher rotates at another base: the shared keys are re-based
    config_text: str = ""  # the resolved config as saved next to args.json and in every checkpoint
    bad_rows: Any = None  # row_guard.BadRowCounter: rows swift drops or replaces while training


@dataclass
class _Current:
    run: RunState | None = None
    tagging: tuple[Tagger, int] | None = None  # (tagger, num_proc) while datasets load


_CURRENT = _Current()


def active_run() -> RunState | None:
    """The run's state once ``activate`` accepted it (None when LinguDistill is not in use)."""
    return _CURRENT.run


def set_active_run(state: RunState | None) -> None:
    _CURRENT.run = state


def active_tagging() -> tuple[Tagger, int] | None:
    """(tagger, num_proc) while swift loads datasets for a LinguDistill run or a tag report, else None."""
    return _CURRENT.tagging


def set_active_tagging(tagging: tuple[Tagger, int] | None) -> None:
    _CURRENT.tagging = tagging
