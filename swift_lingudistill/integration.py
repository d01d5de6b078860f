"""The one module that touches ms-swift's registries and pipeline: everything swift-specific starts here.

Importing it (through the thin ``swift_plugin.py`` given to ``--external_plugins``) registers:
- ``--loss_type lingudistill`` in ``swift.loss.loss_map``;
- a trainer factory hook: with that loss type, ``swift sft`` builds ``LinguDistillTrainer``;
- a pipeline hook that validates the plugin config, the swift flags and the teacher's lineage *before any
  model loads*, logs the resolved config and writes it next to swift's ``args.json``;
- a dataset hook that tags every row (``channel`` column) as it is loaded, local JSONL or registered dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from .config import CONFIG_ENV, LinguDistillConfig, dump_config, load_config
from .families import FamilyAdapter, family_for
from .tagging import Tagger

__all__ = [
    "CONFIG_FILENAME",
    "LOSS_TYPE",
    "MONITOR_CALLBACK",
    "PluginUsageError",
    "RunState",
    "activate",
    "active_run",
    "check_swift_version",
    "register",
    "resolve_teacher",
    "tag_dataset",
    "tagging",
]

LOSS_TYPE = "lingudistill"
MONITOR_CALLBACK = "lingudistill_monitor"
CONFIG_FILENAME = "lingudistill_config.yaml"
SUPPORTED_SWIFT = (Version("4.6"), Version("4.7"))

logger = logging.getLogger("swift_lingudistill")


class PluginUsageError(ValueError):
    """The swift command line and the plugin config do not fit together (raised before any model loads)."""


def check_swift_version() -> str:
    """ms-swift's internal APIs change between minor versions; refuse an untested one with the fix."""
    import swift

    found = Version(swift.__version__)
    low, high = SUPPORTED_SWIFT
    if not (low <= found < high):
        raise ImportError(
            f"swift-lingudistill supports ms-swift >={low},<{high}, but ms-swift {found} is installed. "
            f"Fix: pip install 'ms-swift>={low},<{high}' (or the constraints file shipped with this package)."
        )
    return str(found)


SWIFT_VERSION = check_swift_version()  # at import: an unsupported ms-swift stops here, with the fix


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


_ACTIVE: RunState | None = None


def active_run() -> RunState | None:
    """The run's state once ``activate`` accepted it (None when LinguDistill is not in use)."""
    return _ACTIVE


# ---------------------------------------------------------------------------------------------------------
# Registration (import time)


_REGISTERED = False


def register() -> None:
    """Install the loss type, the trainer hook, the pipeline hook and the dataset hook (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    check_swift_version()
    from swift.loss import loss_map

    from .trainer import LinguDistillLoss

    existing = loss_map.get(LOSS_TYPE)
    if existing is not None and existing is not LinguDistillLoss:
        # swift's registries silently overwrite; a clash must be loud.
        raise RuntimeError(f"loss_type {LOSS_TYPE!r} is already registered by {existing!r}")
    loss_map[LOSS_TYPE] = LinguDistillLoss
    from swift.callbacks import callbacks_map

    from .monitor import LanguageMonitor

    existing = callbacks_map.get(MONITOR_CALLBACK)
    if existing is not None and existing is not LanguageMonitor:
        raise RuntimeError(f"callback {MONITOR_CALLBACK!r} is already registered by {existing!r}")
    callbacks_map[MONITOR_CALLBACK] = LanguageMonitor
    _patch_trainer_factory()
    _patch_pipeline()
    _patch_dataset_loading()
    _REGISTERED = True


def _patch_trainer_factory() -> None:
    from swift.trainers import TrainerFactory

    original = TrainerFactory.get_trainer_cls.__func__

    def get_trainer_cls(cls, args):
        if getattr(args, "loss_type", None) == LOSS_TYPE and not hasattr(args, "rlhf_type"):
            from .trainer import LinguDistillTrainer

            return LinguDistillTrainer
        return original(cls, args)

    TrainerFactory.get_trainer_cls = classmethod(get_trainer_cls)


def _patch_pipeline() -> None:
    from swift.pipelines.train.sft import SwiftSft

    original = SwiftSft._prepare_model_tokenizer

    def _prepare_model_tokenizer(self, *args, **kwargs):
        if getattr(self, "_lingudistill_checked", None) is None:
            self._lingudistill_checked = True
            activate(self.args)
        return original(self, *args, **kwargs)

    SwiftSft._prepare_model_tokenizer = _prepare_model_tokenizer


def _patch_dataset_loading() -> None:
    from swift.dataset import loader

    if not hasattr(loader, "_inject_dataset_routing_tag"):
        raise ImportError(
            "ms-swift's dataset loader changed (swift.dataset.loader._inject_dataset_routing_tag is gone); "
            "this swift-lingudistill release cannot tag datasets with it. Fix: install the supported ms-swift."
        )
    original = loader._inject_dataset_routing_tag

    def _inject_dataset_routing_tag(dataset, ds_name):
        dataset = original(dataset, ds_name)
        if _TAGGING is None:
            return dataset
        tagger, num_proc = _TAGGING
        return tag_dataset(dataset, tagger, num_proc=num_proc)

    loader._inject_dataset_routing_tag = _inject_dataset_routing_tag


_TAGGING: tuple[Tagger, int] | None = None  # (tagger, num_proc) while datasets load for a LinguDistill run


@contextmanager
def tagging(config: LinguDistillConfig, num_proc: int = 1) -> Iterator[Tagger]:
    """Tag every dataset swift loads inside this block (``tag-report`` uses the training path exactly)."""
    global _TAGGING
    register()
    _extend_dataset_columns(config)
    previous, tagger = _TAGGING, Tagger(config.tagging)
    _TAGGING = (tagger, max(1, num_proc))
    try:
        yield tagger
    finally:
        _TAGGING = previous


def tag_dataset(dataset: Any, tagger: Tagger, num_proc: int = 1) -> Any:
    """Write each row's decision into its ``channel`` (the one per-sample column that survives packing)."""
    from datasets import Dataset as HfDataset

    kwargs: dict[str, Any] = {"with_indices": True, "desc": "LinguDistill tagging"}
    if isinstance(dataset, HfDataset):
        kwargs["num_proc"] = num_proc if len(dataset) >= 2 * num_proc > 2 else None
        kwargs["load_from_cache_file"] = False  # the decision depends on the plugin config, not the data alone
    else:  # IterableDataset: map is lazy and takes no desc / num_proc
        kwargs = {"with_indices": True}
    return dataset.map(tagger.tag_row, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Activation (after argument parsing, before any model loads)


def _config_path() -> str | None:
    path = os.environ.get(CONFIG_ENV)
    return path.strip() if path and path.strip() else None


def activate(args: Any) -> RunState | None:
    """Validate everything about this run before any model loads; None when LinguDistill is not in use."""
    global _ACTIVE, _TAGGING
    _ACTIVE, _TAGGING = None, None
    path = _config_path()
    loss_type = getattr(args, "loss_type", None)
    is_rlhf = hasattr(args, "rlhf_type")
    if is_rlhf:
        if path:
            raise PluginUsageError(
                f"{CONFIG_ENV}={path} is set but this is `swift rlhf`: LinguDistill runs in `swift sft` / `swift pt` "
                f"with --loss_type {LOSS_TYPE}. Fix: unset {CONFIG_ENV} (or drop the plugin) for this command."
            )
        return None
    saved = _saved_config(args)
    if loss_type != LOSS_TYPE and not path:
        return None
    if loss_type == LOSS_TYPE and not path and not saved:
        raise PluginUsageError(
            f"--loss_type {LOSS_TYPE} needs a plugin config, and none was given. Fix: name one with "
            f"`{CONFIG_ENV}=plugin_configs/selective.yaml swift sft ...`, an `ENV: {{{CONFIG_ENV}: ...}}` block in "
            f'a swift YAML config, or --model_kwargs \'{{"lingudistill_config": "..."}}\'.'
        )
    if loss_type != LOSS_TYPE:
        raise PluginUsageError(
            f"{CONFIG_ENV}={path} is set, but --loss_type is {loss_type!r}, so the config would be ignored. "
            f"Fix: add --loss_type {LOSS_TYPE}, or unset {CONFIG_ENV} to train without LinguDistill."
        )
    config, source = _resume_or_load(saved, path)
    family = family_for(getattr(args, "model_type", None))
    _check_swift_flags(args, config)
    _init_deepspeed_comm_on_cpu(args)
    state = RunState(config=config, config_path=source, args=args, family=family, tagger=Tagger(config.tagging))
    _check_teacher(state)
    _extend_dataset_columns(config)
    _log_and_save(state)
    _ACTIVE, _TAGGING = state, (state.tagger, max(1, int(getattr(args, "dataset_num_proc", 1) or 1)))
    return state


def _saved_config(args: Any) -> str | None:
    """The config a checkpoint was trained with, when resuming from it."""
    checkpoint = getattr(args, "resume_from_checkpoint", None)
    if not checkpoint:
        return None
    for folder in (Path(checkpoint), Path(checkpoint).parent):
        if (folder / CONFIG_FILENAME).is_file():
            return str(folder / CONFIG_FILENAME)
    return None


def _resume_or_load(saved: str | None, path: str | None) -> tuple[LinguDistillConfig, str]:
    """Resuming restores the checkpoint's own resolved config; a different one named now is an error."""
    if saved is None:
        return load_config(path), str(Path(path).resolve())
    config = load_config(saved)
    if path:
        named = load_config(path)
        theirs, ours = named.model_dump(by_alias=True), config.model_dump(by_alias=True)
        if theirs["teacher"]["model_type"] is None:  # inferred at the first start, written into the checkpoint
            theirs["teacher"]["model_type"] = ours["teacher"]["model_type"]
        theirs["teacher"]["model"] = _absolute_if_local(theirs["teacher"]["model"])
        if theirs != ours:
            changed = sorted(f"{section}.{key}" for section in ours for key in ours[section]
                             if theirs[section][key] != ours[section][key])  # fmt: skip
            raise PluginUsageError(
                f"Resuming from a checkpoint trained with {saved}, but {CONFIG_ENV}={path} differs in: "
                f"{', '.join(changed)}. The run continues with the settings it started with. Fix: unset "
                f"{CONFIG_ENV} (the checkpoint's config is used), or start a new run to change them."
            )
    return config, saved


def _check_swift_flags(args: Any, config: LinguDistillConfig) -> None:
    problems = []
    if getattr(args, "task_type", "causal_lm") != "causal_lm":
        problems.append(f"--task_type {args.task_type}: LinguDistill distils next-token distributions (causal_lm)")
    if (getattr(args, "sequence_parallel_size", 1) or 1) > 1:
        problems.append("--sequence_parallel_size > 1 is not supported: the teacher needs whole sequences")
    if getattr(args, "enable_dft_loss", False):
        problems.append("--enable_dft_loss would be ignored by the LinguDistill loss; remove it")
    if getattr(args, "cached_dataset", None) or getattr(args, "cached_val_dataset", None):
        problems.append(
            "--cached_dataset rows were encoded without LinguDistill tags; pass the raw data with --dataset"
        )
    if getattr(args, "tuner_backend", None) == "unsloth":
        problems.append("--tuner_backend unsloth returns no logits; use the default peft backend")
    if not config.kv_share.detach and getattr(args, "gradient_checkpointing", False) and _use_reentrant(args):
        problems.append(
            "kv_share.detach: false needs gradient to flow through the student's K/V, but reentrant gradient "
            "checkpointing (swift's default here) runs the forward without gradient. Fix: add "
            "--gradient_checkpointing_kwargs '{\"use_reentrant\": false}' (or --gradient_checkpointing false), "
            "or keep detach: true"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not getattr(args, "use_cpu", False) and not _has_accelerator():
        problems.append(
            "several CPU processes without --use_cpu true: transformers then does not treat the run as distributed, "
            "so the ranks train separate replicas (plain DDP) or DeepSpeed fails its batch-size check. Fix: add "
            "--use_cpu true"
        )
    problems += _monitor_problems(args, config)
    if problems:
        raise PluginUsageError(
            "LinguDistill cannot run with these swift arguments:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _monitor_problems(args: Any, config: LinguDistillConfig) -> list[str]:
    enabled = MONITOR_CALLBACK in (getattr(args, "callbacks", None) or [])
    dataset = config.monitor.dataset
    if not enabled:
        return [] if dataset is None else [
            f"monitor.dataset is set but --callbacks {MONITOR_CALLBACK} is not: the held-out set would be ignored. "
            f"Fix: add --callbacks {MONITOR_CALLBACK}, or remove the monitor section"
        ]  # fmt: skip
    problems = []
    if dataset is None:
        problems.append(
            f"--callbacks {MONITOR_CALLBACK} needs monitor.dataset in the plugin config: a held-out text-only JSONL "
            "(swift's messages format) on which to measure the student's perplexity and its KL to the teacher"
        )
    elif not Path(dataset).is_file():
        problems.append(f"monitor.dataset {dataset!r} does not exist. Fix: point it at a held-out text-only JSONL")
    if str(getattr(args, "eval_strategy", "no")) in ("no", "IntervalStrategy.NO"):
        problems.append(
            f"--callbacks {MONITOR_CALLBACK} measures at each evaluation, and this run never evaluates. Fix: add "
            "--eval_strategy steps --eval_steps N with --val_dataset or --split_dataset_ratio"
        )
    return problems


def _init_deepspeed_comm_on_cpu(args: Any) -> None:
    """DeepSpeed on CPU ranks: start its communication before the student loads.

    With --use_cpu, transformers (5.19) skips its DeepSpeed branch, so deepspeed.comm is not started when
    ZeRO-3 partitions the student at load time; DeepSpeed then assumes one rank and fails its batch-size check.
    """
    if not getattr(args, "deepspeed", None) or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return
    import torch

    if torch.cuda.is_available():
        return
    import deepspeed

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo")


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _use_reentrant(args: Any) -> bool:
    """swift's rule (SwiftMixin._fix_gradient_checkpointing): reentrant unless told or plain DDP."""
    kwargs = getattr(args, "gradient_checkpointing_kwargs", None) or {}
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)
    value = kwargs.get("use_reentrant")
    if value is not None:
        return bool(value)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return not (world > 1 and not getattr(args, "deepspeed", None) and not getattr(args, "fsdp", None))


def _student_dir(args: Any) -> str:
    info = getattr(args, "model_info", None)
    return getattr(info, "model_dir", None) or args.model


def _check_teacher(state: RunState) -> None:
    """Lineage and vocabulary, from configs and tokenizers only: a mismatch stops before weights load."""
    from transformers import AutoConfig, AutoTokenizer

    from .teacher import check_lineage, shared_vocabulary, teacher_lineage

    teacher = state.config.teacher
    student_config = AutoConfig.from_pretrained(_student_dir(state.args), trust_remote_code=True)
    if teacher.is_self:
        text = state.family.text_config(student_config)
        state.shared_vocab = int(text.vocab_size)
        return
    teacher_dir, model_type = resolve_teacher(teacher.model, teacher.model_type, state.args)
    state.teacher_dir, state.teacher_model_type = teacher_dir, model_type
    teacher_config = AutoConfig.from_pretrained(teacher_dir, trust_remote_code=True)
    if teacher_config.model_type in state.family.hf_model_types or hasattr(teacher_config, "vision_config"):
        raise PluginUsageError(
            f"teacher.model {teacher.model!r} is a vision-language model ({teacher_config.model_type}). The "
            "teacher is the text-only LM the student was built from. Fix: point teacher.model at that LM, or "
            "use `model: self`."
        )
    rotary = check_lineage(
        state.family.lineage(student_config),
        teacher_lineage(teacher_config),
        teacher.model,
        rebase_rotary=state.config.kv_share.rebase_rotary,
        max_length=getattr(state.args, "max_length", None),
    )
    state.rotary_rebase = rotary.rebase
    if rotary.note and not rotary.rebase:  # a re-base is logged once, when the teacher is built
        from swift.utils import get_logger

        get_logger().info(f"LinguDistill: {rotary.note}")
    state.family.check_teacher_config(teacher_config)
    student_rows = int(state.family.text_config(student_config).vocab_size)
    teacher_rows = int(teacher_config.vocab_size)
    if _same_tokenizer_files(_student_dir(state.args), teacher_dir):
        state.shared_vocab = min(student_rows, teacher_rows)  # byte-identical tokenizers agree on every id
        return
    student_tok = AutoTokenizer.from_pretrained(_student_dir(state.args), trust_remote_code=True)
    teacher_tok = AutoTokenizer.from_pretrained(teacher_dir, trust_remote_code=True)
    state.shared_vocab = shared_vocabulary(student_tok, teacher_tok, student_rows, teacher_rows)


def _same_tokenizer_files(a: str, b: str) -> bool:
    """Cheap shortcut: loading two 150k-token tokenizers costs seconds; identical files need no comparison."""
    fa, fb = Path(a, "tokenizer.json"), Path(b, "tokenizer.json")
    if not (fa.is_file() and fb.is_file()) or fa.stat().st_size != fb.stat().st_size:
        return False
    return hashlib.sha256(fa.read_bytes()).digest() == hashlib.sha256(fb.read_bytes()).digest()


def resolve_teacher(model: str, model_type: str | None, args: Any) -> tuple[str, str]:
    """The teacher's local directory and its own swift model_type (never the student's)."""
    from swift.model.model_meta import get_matched_model_meta, get_matched_model_types
    from swift.utils import safe_snapshot_download
    from transformers import AutoConfig

    looks_like_path = model.startswith(("/", "./", "../", "~")) or model.count("/") > 1
    if looks_like_path and not os.path.isdir(os.path.expanduser(model)):
        raise PluginUsageError(
            f"teacher.model {model!r} does not exist. Fix: point it at the teacher's checkpoint folder (with "
            "config.json), or a hub id such as Qwen/Qwen2.5-7B-Instruct."
        )
    try:
        model_dir = safe_snapshot_download(
            os.path.expanduser(model), download_model=False, use_hf=getattr(args, "use_hf", None)
        )
    except Exception as e:  # hub errors have many types; all mean the same to the user
        raise PluginUsageError(
            f"teacher.model {model!r} could not be found locally or on the hub ({type(e).__name__}: {e}). "
            "Fix: point it at the teacher's checkpoint folder, or a hub id you can download."
        ) from None
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise PluginUsageError(f"teacher.model {model!r}: {model_dir} has no config.json; it is not a checkpoint.")
    if model_type:
        return model_dir, model_type
    meta = get_matched_model_meta(model)
    if meta is not None and meta.model_type:
        return model_dir, meta.model_type
    hf_config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    architectures = getattr(hf_config, "architectures", None)
    candidates = get_matched_model_types(architectures)
    if not candidates:
        raise PluginUsageError(
            f"ms-swift has no model_type for the teacher {model!r} (architectures {architectures}). "
            "Fix: set teacher.model_type to the swift model_type of that LM."
        )
    # swift lists e.g. LlamaForCausalLM's types with 'codefuse_codellama' first: the checkpoint's own type wins.
    if getattr(hf_config, "model_type", None) in candidates:
        candidates = [hf_config.model_type] + [c for c in candidates if c != hf_config.model_type]
    if len(candidates) > 1:
        logger.info(
            "LinguDistill: teacher model_type inferred as %s (candidates %s share its architecture); "
            "set teacher.model_type to choose another.",
            candidates[0],
            candidates,
        )
    return model_dir, candidates[0]


def _extend_dataset_columns(config: LinguDistillConfig) -> None:
    """Keep the per-row tag fields through swift's column clean-up so the tagger can read them."""
    from swift.dataset.preprocessor.core import RowPreprocessor

    fields = [config.tagging.explicit_field, *config.tagging.category_fields]
    for name in fields:
        if name and name not in RowPreprocessor.standard_keys:
            RowPreprocessor.standard_keys.append(name)


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


def _log_and_save(state: RunState) -> None:
    from swift.utils import get_logger, is_master

    text = dump_config(_as_resolved(state))
    state.config_text = f"# LinguDistill config resolved from {state.config_path}\n{text}"
    swift_logger = get_logger()
    teacher = "self" if state.config.teacher.is_self else f"{state.teacher_dir} (model_type {state.teacher_model_type})"
    swift_logger.info(
        f"LinguDistill config {state.config_path} (teacher: {teacher}, shared vocabulary: {state.shared_vocab}):\n"
        f"{text}"
    )
    output_dir = getattr(state.args, "output_dir", None)
    if output_dir and is_master():
        os.makedirs(output_dir, exist_ok=True)
        Path(output_dir, CONFIG_FILENAME).write_text(state.config_text, encoding="utf-8")
        swift_logger.info(f"LinguDistill config saved to {os.path.join(output_dir, CONFIG_FILENAME)}")
