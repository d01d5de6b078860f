"""What every tiny builder shares: the cache folder, atomic builds, and the sizes of a tiny language model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DEFAULT_SIZE",
    "GenerationIds",
    "TinySize",
    "atomic_build_dir",
    "default_cache_dir",
    "load_parent_lm",
    "perturb_",
    "save_checkpoint",
    "write_jsonl",
]


def default_cache_dir() -> Path:
    """Where built artefacts that never change (the tokenizer) are cached between runs."""
    root = os.environ.get("LINGUDISTILL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "swift_lingudistill"
    )
    return Path(root)


def atomic_build_dir(final: Path, build) -> Path:
    """Build into a temporary folder, then rename: a crashed or concurrent build never leaves half a folder."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@dataclass(frozen=True)
class TinySize:
    """Sizes of a tiny language model; the VLM's language model and its teacher share them."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vocab: int = 151936  # the Qwen2/2.5 embedding rows; other families pass their own
    rope_theta: float = 1_000_000.0
    # Set explicitly on both sides: Qwen2Config defaults to 1e-6 and Qwen2.5-VL's text config to 1e-5.
    rms_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def mrope_section(self) -> list[int]:
        """Split half the head size into (temporal, height, width) rotary sections, as Qwen does."""
        half = self.head_dim // 2
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]


DEFAULT_SIZE = TinySize()


def perturb_(modules: list[torch.nn.Module], scale: float, seed: int) -> None:
    """Add Gaussian noise of ``scale`` times each tensor's std: the drift multimodal fine-tuning causes.

    Tied tensors (an embedding shared with the output layer) are perturbed once.
    """
    gen = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    with torch.no_grad():
        for module in modules:
            for param in module.parameters():
                if id(param) in seen:
                    continue
                seen.add(id(param))
                noise = torch.randn(param.shape, generator=gen, dtype=param.dtype)
                param.add_(noise * scale * param.std().clamp_min(1e-3))


@dataclass(frozen=True)
class GenerationIds:
    """The special ids a checkpoint's tokenizer implies, written as its generation config so generation stops."""

    bos: int
    eos: int | list[int]
    pad: int


def load_parent_lm(lm_dir: str | Path | None) -> torch.nn.Module | None:
    """The text-only LM a tiny VLM's language model starts from (float32), or None for a fully random VLM."""
    if lm_dir is None:
        return None
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)


def save_checkpoint(out_dir: str | Path, model: torch.nn.Module, processor: Any, ids: GenerationIds) -> Path:
    """A local checkpoint swift loads like a hub one: weights, tokenizer or processor, generation config."""
    from transformers import GenerationConfig

    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    GenerationConfig(bos_token_id=ids.bos, eos_token_id=ids.eos, pad_token_id=ids.pad).save_pretrained(out_dir)
    return out_dir


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Rows in swift's dataset format, one JSON object per line."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
