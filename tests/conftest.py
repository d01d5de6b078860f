"""Shared fixtures: offline environment, the real Qwen tokenizer, tiny models and batches built in seconds."""

from __future__ import annotations

import os

# Nothing may reach a hub from the tests (and nothing can on the CI machine).
for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "MODELSCOPE_OFFLINE", "USE_HF"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from swift_lingudistill.tiny import build_demo_assets, qwen_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return qwen_tokenizer()


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory, tokenizer) -> dict:
    """The demo's teacher LM, degraded Qwen2.5-VL and mixed dataset, saved once per test session."""
    return build_demo_assets(tmp_path_factory.mktemp("demo"))
