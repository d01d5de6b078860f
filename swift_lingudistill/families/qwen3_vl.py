"""Qwen3-VL: interleaved M-RoPE, q/k norm, deepstack; vision tokens ``<|image_pad|>`` / ``<|video_pad|>``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..rope_rebase import interleaved_components
from .base import unwrap_model
from .qwen2_vl import Qwen2VLFamily, mrope_section

__all__ = ["Qwen3VLFamily"]


class Qwen3VLFamily(Qwen2VLFamily):
    """Qwen3-VL (dense), built from Qwen3 text LMs; reached and positioned as Qwen2-VL, except:

    - Interleaved M-RoPE spreads T/H/W over alternating frequencies, but a text token's three components are
      equal, so every frequency sees the same value: plain 1-D RoPE at the temporal row, as for Qwen2-VL.
    - q/k norm is inside each attention module, before RoPE: the captured student K/V are post-norm and
      post-RoPE, and the teacher's own attention modules apply their norm to their own positions.
    - Deepstack adds visual features to the hidden states of early layers at vision positions only. Those
      positions are always shared (their K/V come from the student), so the teacher never needs them; text
      positions are untouched.
    - ``get_rope_index`` needs ``mm_token_type_ids``; when a batch lacks them they are read off the ids.
    """

    name = "qwen3_vl"
    swift_model_types = ("qwen3_vl",)
    hf_model_types = ("qwen3_vl",)

    def rotary_components(self, batch: dict[str, Any], model: nn.Module) -> torch.Tensor:
        if batch.get("position_ids") is None and batch.get("mm_token_type_ids") is None:
            config = unwrap_model(model).config
            ids = batch["input_ids"]
            types = (ids == config.image_token_id).long() + 2 * (ids == config.video_token_id).long()  # [B, L]
            batch = {**batch, "mm_token_type_ids": types}
        # swift's training batch holds [3, B, L] (T, H, W; it moves the text row to text_position_ids);
        # [4, B, L] has the text row first. Either way the parent returns the three components.
        return super().rotary_components(batch, model)

    def frequency_components(self, config: Any, n_freq: int) -> torch.Tensor:
        """Interleaved M-RoPE: H and W take every third frequency (1, 4, 7, ... and 2, 5, 8, ...) up to 3x their
        section; the others follow T (transformers' ``Qwen3VLTextRotaryEmbedding.recomposition_frequencies``)."""
        return interleaved_components(mrope_section(config), n_freq)
