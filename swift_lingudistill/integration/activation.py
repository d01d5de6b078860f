"""Everything about a run checked after swift parses its arguments and before any model loads.

swift's pipeline hook (``registration``) calls ``activate``; what it accepts becomes the run's state
(``run_state``), which the trainer, the loss, the monitor and the dataset hook read.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import CONFIG_ENV
from ..families import family_for
from ..tagging import Tagger
from .dataset_tagging import extend_dataset_columns
from .flag_checks import check_monitor_needs_the_loss, check_swift_flags
from .preflight import run_preflight
from .redaction import redact_logs
from .resume import check_run_folder, load_or_resume_config, save_resolved_config, saved_config
from .row_guard import BadRowCounter
from .run_state import LOSS_TYPE, PluginUsageError, RunState, set_active_run, set_active_tagging
from .teacher_resolution import check_teacher

__all__ = ["activate"]


def _config_path() -> str | None:
    path = os.environ.get(CONFIG_ENV)
    return path.strip() if path and path.strip() else None


def activate(args: Any) -> RunState | None:
    """Validate everything about this run before any model loads; None when LinguDistill is not in use.

    Order: the config, swift's flags, the output folder, the teacher's files and configs, then the pre-flight
    over the teacher's weights and the data. Only when all of them pass does the plugin write anything (the
    resolved config, into the run's own folder).
    """
    set_active_run(None)
    set_active_tagging(None)
    path = _config_path()
    loss_type = getattr(args, "loss_type", None)
    if hasattr(args, "rlhf_type"):
        if path:
            raise PluginUsageError(
                f"{CONFIG_ENV}={path} is set but this is `swift rlhf`: LinguDistill runs in `swift sft` / `swift pt` "
                f"with --loss_type {LOSS_TYPE}. Fix: unset {CONFIG_ENV} (or drop the plugin) for this command."
            )
        return None
    saved = saved_config(args)
    if loss_type != LOSS_TYPE and not path:
        check_monitor_needs_the_loss(args)
        return None
    if loss_type == LOSS_TYPE and not path and not saved:
        raise PluginUsageError(
            f"--loss_type {LOSS_TYPE} needs a plugin config, and none was given. Fix: name one with "
            f"`{CONFIG_ENV}=selective swift sft ...` (a shipped config, or a YAML path), an "
            f"`ENV: {{{CONFIG_ENV}: ...}}` block in "
            f'a swift YAML config, or --model_kwargs \'{{"lingudistill_config": "..."}}\'.'
        )
    if loss_type != LOSS_TYPE:
        given = f"--loss_type is {loss_type}" if loss_type else "no --loss_type was given (swift's default loss)"
        raise PluginUsageError(
            f"{CONFIG_ENV}={path} is set, but {given}, so the config would be ignored. "
            f"Fix: add --loss_type {LOSS_TYPE}, or unset {CONFIG_ENV} to train without LinguDistill."
        )
    config, source = load_or_resume_config(saved, path)
    redact_logs(config)
    family = family_for(getattr(args, "model_type", None))
    check_swift_flags(args, config)
    check_run_folder(args)
    _init_deepspeed_comm_on_cpu(args)
    state = RunState(config=config, config_path=source, args=args, family=family, tagger=Tagger(config.tagging))
    check_teacher(state)
    redact_logs(config, {"teacher.model": state.teacher_dir} if state.teacher_dir else None)
    extend_dataset_columns(config)
    run_preflight(state)
    state.bad_rows = BadRowCounter(config.preflight.max_bad_rows)
    save_resolved_config(state)
    set_active_run(state)
    set_active_tagging((state.tagger, max(1, int(getattr(args, "dataset_num_proc", 1) or 1))))
    return state


def _init_deepspeed_comm_on_cpu(args: Any) -> None:
    """DeepSpeed on CPU ranks: start its communication before the student loads.

    With --use_cpu, transformers (5.19) skips its DeepSpeed branch, so deepspeed.comm is not started when
    ZeRO-3 partitions the student at load time; DeepSpeed then assumes one rank and fails its batch-size check.
    """
    if not getattr(args, "deepspeed", None) or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return
    if not getattr(args, "use_cpu", False):  # on an accelerator, transformers starts it itself
        return
    import deepspeed

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo")
