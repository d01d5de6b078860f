"""The resolved config saved with the run and every checkpoint, and what a resume restores from them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from ..config import (
    CONFIG_ENV,
    ConfigError,
    LinguDistillConfig,
    displayed_value,
    dump_config,
    load_config,
    resolve_config_path,
)
from .run_state import CONFIG_FILENAME, PluginUsageError, RunState

__all__ = [
    "SaveConfigWithCheckpoints",
    "check_run_folder",
    "load_or_resume_config",
    "restore_renamed_weights",
    "save_resolved_config",
    "saved_config",
]


def saved_config(args: Any) -> str | None:
    """The config a checkpoint was trained with, when resuming from it."""
    checkpoint = getattr(args, "resume_from_checkpoint", None)
    if not checkpoint:
        return None
    for folder in (Path(checkpoint), Path(checkpoint).parent):
        if (folder / CONFIG_FILENAME).is_file():
            return str(folder / CONFIG_FILENAME)
    return None


def load_or_resume_config(saved: str | None, path: str | None) -> tuple[LinguDistillConfig, str]:
    """The config and where it came from; resuming restores the checkpoint's own, a different one named now is
    an error."""
    if saved is None:
        return load_config(path), str(resolve_config_path(path).resolve())
    try:
        config = load_config(saved)
    except ConfigError as e:
        # The saved config keeps `${VAR}` as written (never the value): a resume reads the variable again.
        raise ConfigError(
            f"Resuming from a checkpoint whose config is {saved}: {e}\nThe saved config names environment "
            "variables instead of storing their values; a resume reads them again. Fix: export them as for the "
            "first run."
        ) from None
    if path:
        named = load_config(path)
        theirs, ours = named.model_dump(by_alias=True), config.model_dump(by_alias=True)
        if theirs["teacher"]["model_type"] is None:  # inferred at the first start, written into the checkpoint
            theirs["teacher"]["model_type"] = ours["teacher"]["model_type"]
        theirs["teacher"]["model"] = _absolute_if_local(theirs["teacher"]["model"])
        ours["teacher"]["model"] = _absolute_if_local(ours["teacher"]["model"])
        if theirs != ours:
            changed = sorted(f"{section}.{key}" for section in ours for key in ours[section]
                             if theirs[section][key] != ours[section][key])  # fmt: skip
            raise PluginUsageError(
                f"Resuming from a checkpoint trained with {saved}, but {CONFIG_ENV}={path} differs in: "
                f"{', '.join(changed)}. The run stops here: a resumed run keeps the settings it started with. Fix: "
                f"unset {CONFIG_ENV} (the checkpoint's config is then used), or start a new run to change them."
            )
    return config, saved


_RUN_FILES = (CONFIG_FILENAME, "args.json", "logging.jsonl")


def check_run_folder(args: Any) -> None:
    """Refuse to write into a folder that holds another run, unless this run resumes that one.

    With swift's default ``--add_version true`` every run gets a new ``v<N>-<time>`` folder. With
    ``--add_version false`` the run writes straight into ``--output_dir``: its config, args.json and logs would
    replace another run's, whose checkpoints were trained with the old ones.
    """
    if getattr(args, "add_version", True):
        return
    folder = Path(args.output_dir)
    found = [name for name in _RUN_FILES if (folder / name).exists()]
    found += sorted(p.name for p in folder.glob("checkpoint-*"))[:3]
    if not found:
        return
    checkpoint = getattr(args, "resume_from_checkpoint", None)
    if checkpoint and Path(checkpoint).resolve().is_relative_to(folder.resolve()):
        return  # resuming that very run: it continues in its own folder
    raise PluginUsageError(
        f"--output_dir {folder} holds another run ({', '.join(found)}) and --add_version false would write this "
        "run's files over it. Nothing was written. Fix: drop --add_version false (swift then makes a new "
        "v<N>-<time> folder inside), choose an empty --output_dir, or resume that run with "
        f"--resume_from_checkpoint {folder}/checkpoint-<step>."
    )


def _absolute_if_local(model: str) -> str:
    """A teacher path that exists here, made absolute (a hub id stays as it is)."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _as_resolved(state: RunState) -> LinguDistillConfig:
    """The config with what was decided at start written in: the teacher's own model_type, absolute paths."""
    teacher = state.config.teacher
    if teacher.is_self:
        return state.config
    update = {"model": _absolute_if_local(teacher.model), "model_type": state.teacher_model_type}
    resolved = teacher.model_copy(update=update)
    return state.config.model_copy(update={"teacher": resolved})


def save_resolved_config(state: RunState) -> None:
    """Log the resolved config and write it next to swift's ``args.json`` (``state.config_text`` keeps it)."""
    from swift.utils import get_logger, is_master

    text = dump_config(_as_resolved(state))
    state.config_text = f"# LinguDistill config resolved from {state.config_path}\n{text}"
    swift_logger = get_logger()
    teacher = "self"
    if not state.config.teacher.is_self:
        shown = displayed_value(state.config, "teacher.model", state.teacher_dir)
        teacher = f"{shown} (model_type {state.teacher_model_type})"
    swift_logger.info(
        f"LinguDistill config {state.config_path} (teacher: {teacher}, shared vocabulary: {state.shared_vocab}):\n"
        f"{text}"
    )
    output_dir = getattr(state.args, "output_dir", None)
    if output_dir and is_master():
        os.makedirs(output_dir, exist_ok=True)
        Path(output_dir, CONFIG_FILENAME).write_text(state.config_text, encoding="utf-8")
        swift_logger.info(f"LinguDistill config saved to {os.path.join(output_dir, CONFIG_FILENAME)}")


class SaveConfigWithCheckpoints(TrainerCallback):
    """Each checkpoint carries the resolved plugin config, so a resume restores it instead of re-guessing."""

    def __init__(self, text: str) -> None:
        self.text = text

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / CONFIG_FILENAME).write_text(self.text, encoding="utf-8")
        return control


def restore_renamed_weights(model: torch.nn.Module, checkpoint: Path) -> int:
    """Load a checkpoint's weights whose saved names only match after transformers' own renaming rules.

    A full fine-tuning checkpoint of e.g. Qwen2.5-VL is saved under the legacy key names (``model.layers.*``,
    ``visual.*``) while the live model uses ``model.language_model.*`` / ``model.visual.*``; transformers 5.19's
    non-strict resume then matches nothing (a warning only) and training would continue from the initial weights.
    Returns how many tensors were restored (0 when the names matched or the model is a PEFT model).
    """
    weights_file = checkpoint / "model.safetensors"
    if not weights_file.is_file() or hasattr(model, "get_base_model"):  # adapters resume through PEFT, fine
        return 0
    from safetensors.torch import load_file
    from transformers.conversion_mapping import WeightRenaming, get_model_conversion_mapping

    saved = load_file(str(weights_file), device="cpu")
    live = model.state_dict()
    if not set(saved) - set(live):  # the names match: transformers loaded them itself
        return 0
    rules = [r for r in get_model_conversion_mapping(model) if type(r) is WeightRenaming]
    renamed = {}
    for key, tensor in saved.items():
        new_key = key
        for rule in rules:
            for source, target in zip(rule.source_patterns, rule.target_patterns, strict=False):
                if re.search(source, key):
                    new_key = re.sub(source, target, key)
                    break
            if new_key != key:
                break
        renamed[new_key] = tensor
    unknown = sorted(set(renamed) - set(live))
    if unknown:
        raise RuntimeError(
            f"Cannot resume the student's weights from {checkpoint}: {len(unknown)} saved tensors match no "
            f"parameter of the model even after transformers' renaming rules (e.g. {unknown[:3]}). Training would "
            "continue from the initial weights. Fix: resume with the transformers version that saved the checkpoint."
        )
    with torch.no_grad():
        for key, tensor in renamed.items():
            live[key].copy_(tensor.to(live[key].dtype))
    return len(renamed)
