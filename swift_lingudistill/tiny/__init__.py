"""Tiny random-weight models, tokenizers and data built locally in seconds (never downloaded, never committed).

One module per model family; ``demo`` builds the README demo's assets.
"""

from .common import TinySize, atomic_build_dir, default_cache_dir
from .demo import build_demo_assets, build_demo_dataset
from .qwen import (
    QWEN_SPECIAL_TOKENS,
    build_qwen2_lm,
    build_qwen_vl,
    make_qwen2_lm,
    make_qwen_vl,
    make_qwen_vl_processor,
    qwen_tokenizer,
)

__all__ = [
    "QWEN_SPECIAL_TOKENS",
    "TinySize",
    "atomic_build_dir",
    "build_demo_assets",
    "build_demo_dataset",
    "build_qwen2_lm",
    "build_qwen_vl",
    "default_cache_dir",
    "make_qwen2_lm",
    "make_qwen_vl",
    "make_qwen_vl_processor",
    "qwen_tokenizer",
]
