"""One intra-op thread for the loss tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: with a busy CPU, intra-op threads only spin, which made these files ~8x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
