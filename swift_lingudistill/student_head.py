"""The fused-linear path's hook on the student: its output layer records its input instead of computing logits.

A VLM's forward ends with ``logits = lm_head(hidden[:, kept])``: a [B, K, V] tensor (2.5 GB at 8192 tokens of a
151936 vocabulary in bf16, as much again for its gradient). While ``HeadRecorder.recording()`` is active, the
output layer's ``forward`` keeps the hidden states it receives ([B, K, H], with their autograd graph) and returns
an empty [B, K, 0] placeholder; the loss then computes CE and distillation from those hidden states and the
layer's own weight and bias, chunk by chunk (``losses.StudentHead``), and the gradient reaches the hidden states,
the weight (tied to the embedding or not) and the bias exactly as it would through ``F.linear``.

Only a plain ``nn.Linear`` whose output the model uses unchanged can be replaced; ``fused_head_blocker`` names
what rules the path out, and the caller then keeps the logits path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .loss_inputs import StudentHead

__all__ = ["HeadRecorder", "fused_head_blocker"]


def fused_head_blocker(head: nn.Module, text_config: Any) -> str | None:
    """Why the fused-linear path cannot stand in for this output layer, or None when it can."""
    if type(head) is not nn.Linear:
        return (
            f"the output layer is a {type(head).__module__}.{type(head).__name__}, not a plain torch Linear (a PEFT "
            "adapter or modules_to_save wrapper on lm_head computes more than weight and bias)"
        )
    if hasattr(head.weight, "ds_id"):
        return (
            "DeepSpeed ZeRO-3 partitions the output layer: its full weight exists only inside its own forward, "
            "and a gradient returned for it after that would not match the partition"
        )
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        if getattr(text_config, name, None) not in (None, 1, 1.0):
            return f"the model rescales its logits after the output layer ({name}={getattr(text_config, name)})"
    return None


class HeadRecorder:
    """Stands in for one output layer's forward while ``recording()`` is active (one student forward)."""

    def __init__(self, head: nn.Module) -> None:
        self.head = head
        self.hidden: torch.Tensor | None = None  # [B, K, H]: what the output layer received

    @contextmanager
    def recording(self) -> Iterator[HeadRecorder]:
        """Replace the layer's forward for the block (module hooks, e.g. DeepSpeed's or accelerate's, still run)."""
        self.hidden = None
        previous = self.head.__dict__.get("forward")  # an instance-level forward someone else set, if any
        self.head.forward = self._record
        try:
            yield self
        finally:
            if previous is None:
                del self.head.forward
            else:
                self.head.forward = previous

    def _record(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.hidden is not None:
            raise RuntimeError(
                "the student's output layer ran twice in one forward; LinguDistill's fused-linear loss records a "
                "single call. Fix: set loss.fused_linear: false in the plugin config"
            )
        self.hidden = hidden
        return hidden.new_zeros(*hidden.shape[:-1], 0)  # [B, K, 0]: nothing downstream may read logits

    def student(self) -> StudentHead:
        """The recorded hidden states [B, K, H] with the layer's weight and bias (the parameters themselves)."""
        if self.hidden is None:
            raise RuntimeError(
                "the student's output layer was not called during its forward, so there are no hidden states to "
                "compute the loss from. Fix: set loss.fused_linear: false in the plugin config"
            )
        return StudentHead(self.hidden, self.head.weight, self.head.bias)
