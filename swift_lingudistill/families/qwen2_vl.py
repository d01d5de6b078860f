"""Qwen2-VL and Qwen2.5-VL: 3-D M-RoPE, vision tokens ``<|image_pad|>`` / ``<|video_pad|>``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..rope_rebase import sectioned_components
from .base import FamilyAdapter, unwrap_model

__all__ = ["Qwen2VLFamily", "mrope_section"]


class Qwen2VLFamily(FamilyAdapter):
    """Qwen2-VL / Qwen2.5-VL, built from Qwen2 / Qwen2.5 text LMs.

    M-RoPE gives text tokens three equal components, which is plain 1-D RoPE at that value; but text
    after an image continues at a compressed position (an image on a 6x8 grid advances it by 4, not 12),
    so the teacher must take the student's text positions, never sequence indices.
    """

    name = "qwen2_vl"
    swift_model_types = ("qwen2_vl", "qwen2_5_vl")
    hf_model_types = ("qwen2_vl", "qwen2_5_vl")

    def language_model(self, model: nn.Module) -> nn.Module:
        return unwrap_model(model).model.language_model

    def rotary_positions(self, batch: dict[str, Any], model: nn.Module) -> torch.Tensor:
        # For text tokens the temporal row is the 1-D rotary position.
        return self.rotary_components(batch, model)[0]

    def rotary_components(self, batch: dict[str, Any], model: nn.Module) -> torch.Tensor:
        """[3, B, L] (temporal, height, width) M-RoPE positions, as the student used them."""
        position_ids = batch.get("position_ids")
        if position_ids is None:
            inner = unwrap_model(model).model
            position_ids, _ = inner.get_rope_index(
                batch["input_ids"],
                image_grid_thw=batch.get("image_grid_thw"),
                video_grid_thw=batch.get("video_grid_thw"),
                attention_mask=batch.get("attention_mask"),
                mm_token_type_ids=batch.get("mm_token_type_ids"),
            )
        if position_ids.dim() == 2:  # 1-D positions (text-only batch): all three components are equal
            return position_ids[None].expand(3, *position_ids.shape)
        # [3, B, L] (temporal, height, width), or [4, B, L] with the text positions first (packing).
        return position_ids[1:] if position_ids.shape[0] == 4 else position_ids

    def frequency_components(self, config: Any, n_freq: int) -> torch.Tensor:
        """Sectioned M-RoPE: consecutive blocks of frequencies follow T, H and W (``mrope_section``)."""
        return sectioned_components(mrope_section(config), n_freq)


def mrope_section(config: Any) -> list[int]:
    text = getattr(config, "text_config", config)
    params = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    section = params.get("mrope_section")
    if section is None:
        raise ValueError(f"{type(config).__name__} has no mrope_section in its rope parameters")
    return [int(n) for n in section]
