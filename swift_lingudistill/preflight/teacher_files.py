"""A teacher checkpoint judged from its files alone: does it need its own Python code, are its weights finite.

Nothing here imports the checkpoint's code or builds a model: the JSON files are read as text and the
safetensors shards tensor by tensor, so a 70B teacher costs one pass over its files and one tensor of memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["nonfinite_tensors", "remote_code_reasons"]

# Files through which transformers' Auto classes import a checkpoint's own code (an `auto_map` entry).
_CODE_BEARING = (
    "config.json",
    "tokenizer_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "feature_extractor_config.json",
    "video_preprocessor_config.json",
)


def remote_code_reasons(folder: str | Path) -> list[str]:
    """Why loading this checkpoint would run code it ships (empty when transformers' own classes suffice)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    folder = Path(folder)
    reasons = []
    for name in _CODE_BEARING:
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # not ours to judge here; transformers reports a broken file itself
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        if auto_map:
            targets = sorted({str(v if isinstance(v, str) else v[0]) for v in auto_map.values() if v})
            reasons.append(f"{name} has an auto_map ({', '.join(targets)})")
        if name == "config.json" and isinstance(data, dict):
            model_type = data.get("model_type")
            if model_type and model_type not in CONFIG_MAPPING:
                reasons.append(f"config.json's model_type {model_type!r} is not built into transformers")
    return reasons


def nonfinite_tensors(folder: str | Path, limit: int = 5) -> tuple[int, list[str]]:
    """(tensors read, up to ``limit`` descriptions of floating-point tensors holding NaN or infinity).

    Reads every ``*.safetensors`` file of ``folder``; (0, []) when there is none.
    """
    from safetensors import safe_open

    read, bad = 0, []
    for shard in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                tensor = handle.get_tensor(key)
                read += 1
                if not tensor.is_floating_point():
                    continue
                finite = torch.isfinite(tensor)
                if not bool(finite.all()):
                    count = int(finite.numel() - finite.sum())
                    bad.append(f"{shard.name}: {key} ({count} of {tensor.numel()} values are NaN or infinite)")
                    if len(bad) >= limit:
                        return read, bad
    return read, bad
