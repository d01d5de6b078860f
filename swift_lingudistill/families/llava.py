"""LLaVA-1.5 (transformers ``LlavaForConditionalGeneration``): a CLIP tower in front of a Llama / Vicuna LM."""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import FamilyAdapter, unwrap_model

__all__ = ["LlavaFamily"]


class LlavaFamily(FamilyAdapter):
    """LLaVA-1.5-HF, built from Vicuna-1.5 (``LlamaForCausalLM``).

    What differs from Qwen-VL: plain 1-D RoPE. swift's ``llava1_5_hf`` template puts no ``position_ids`` in
    the batch (except in padding-free batches, where they restart per sequence), so the student's positions
    are sequence indices, which the base class returns. The ``<image>`` token is added to the vocabulary
    (llava-1.5-7b-hf: id 32000, rows padded to 32064; Vicuna-7B: 32000 rows): the core compares only the ids
    both models score and always shares the K/V of ids the teacher lacks.
    """

    name = "llava"
    swift_model_types = ("llava1_5_hf",)
    hf_model_types = ("llava",)

    def vision_token_ids(self, config: Any) -> tuple[int, ...]:
        # ``image_token_id`` is an alias of ``image_token_index`` in LlavaConfig: one id, not two.
        return (int(config.image_token_id),)

    def language_model(self, model: nn.Module) -> nn.Module:
        return unwrap_model(model).model.language_model
