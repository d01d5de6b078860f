"""The demo's tiny random-weight Qwen2.5-VL / Qwen2-VL, its teacher LM and its mixed dataset, built locally in
seconds with the real Qwen tokenizer (never downloaded, never committed): what ``build-demo`` needs.

The builders of the other families live with the tests (``tests/support/tiny``).
"""

from .common import TinySize, atomic_build_dir, default_cache_dir
from .demo import build_demo_assets, build_demo_dataset, build_monitor_set
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
    "build_monitor_set",
    "build_qwen2_lm",
    "build_qwen_vl",
    "default_cache_dir",
    "make_qwen2_lm",
    "make_qwen_vl",
    "make_qwen_vl_processor",
    "qwen_tokenizer",
]
