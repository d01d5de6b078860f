"""Which checkpoint teaches, and whether it can: resolved and checked from configs and tokenizers only.

A teacher of another lineage or vocabulary stops the run here, before any weights load.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from ..preflight import remote_code_reasons
from ..teacher import check_lineage, shared_vocabulary, teacher_lineage
from .run_state import PluginUsageError, RunState

__all__ = ["check_teacher", "resolve_teacher", "student_dir"]

logger = logging.getLogger("swift_lingudistill")


def student_dir(args: Any) -> str:
    """The student's local checkpoint folder as swift resolved it (``--model`` when not resolved yet)."""
    info = getattr(args, "model_info", None)
    return getattr(info, "model_dir", None) or args.model


def check_teacher(state: RunState) -> None:
    """Lineage and vocabulary, from configs and tokenizers only: a mismatch stops before weights load.

    Fills ``state.teacher_dir``, ``state.teacher_model_type``, ``state.shared_vocab`` and ``state.rotary_rebase``.
    The plugin runs no code shipped with a checkpoint: the student's files are read with transformers' own classes
    (swift itself loads the student, with its own default), the teacher's only with
    ``teacher.trust_remote_code: true``.
    """
    from transformers import AutoConfig, AutoTokenizer

    teacher = state.config.teacher
    trust = teacher.trust_remote_code
    student_config = AutoConfig.from_pretrained(student_dir(state.args), trust_remote_code=False)
    if teacher.is_self:
        text = state.family.text_config(student_config)
        state.shared_vocab = int(text.vocab_size)
        return
    teacher_dir, model_type = resolve_teacher(teacher.model, teacher.model_type, state.args, trust)
    state.teacher_dir, state.teacher_model_type = teacher_dir, model_type
    teacher_config = AutoConfig.from_pretrained(teacher_dir, trust_remote_code=trust)
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
    if _same_tokenizer_files(student_dir(state.args), teacher_dir):
        state.shared_vocab = min(student_rows, teacher_rows)  # byte-identical tokenizers agree on every id
        return
    student_tok = AutoTokenizer.from_pretrained(student_dir(state.args), trust_remote_code=False)
    teacher_tok = AutoTokenizer.from_pretrained(teacher_dir, trust_remote_code=trust)
    state.shared_vocab = shared_vocabulary(student_tok, teacher_tok, student_rows, teacher_rows)


def _same_tokenizer_files(a: str, b: str) -> bool:
    """Cheap shortcut: loading two 150k-token tokenizers costs seconds; identical files need no comparison."""
    fa, fb = Path(a, "tokenizer.json"), Path(b, "tokenizer.json")
    if not (fa.is_file() and fb.is_file()) or fa.stat().st_size != fb.stat().st_size:
        return False
    return hashlib.sha256(fa.read_bytes()).digest() == hashlib.sha256(fb.read_bytes()).digest()


def resolve_teacher(model: str, model_type: str | None, args: Any, trust_remote_code: bool = False) -> tuple[str, str]:
    """The teacher's local directory and its own swift model_type (never the student's).

    A checkpoint that ships its own code is refused here, before any of it runs, unless the user trusts it.
    """
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
        raise PluginUsageError(
            f"teacher.model {model!r}: {model_dir} has no config.json; it is not a checkpoint. Fix: point "
            "teacher.model at the folder that holds the LM's config.json and weights."
        )
    reasons = remote_code_reasons(model_dir)
    if reasons and not trust_remote_code:
        raise PluginUsageError(
            f"teacher.model {model!r} needs Python code shipped with the checkpoint ({'; '.join(reasons)}), and "
            "teacher.trust_remote_code is false, so none of it was run. Fix: if you trust the checkpoint's "
            "source, add `trust_remote_code: true` under teacher in the plugin config; otherwise use a teacher "
            "that transformers supports natively."
        )
    if model_type:
        return model_dir, model_type
    meta = get_matched_model_meta(model)
    if meta is not None and meta.model_type:
        return model_dir, meta.model_type
    hf_config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
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
