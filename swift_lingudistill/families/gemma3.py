"""Gemma 3 vision-language models (``Gemma3ForConditionalGeneration``), taught by Gemma 3 text LMs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import FamilyAdapter, unwrap_model

__all__ = ["Gemma3Family", "Gemma3UnsupportedConfigError", "refuse_unsupported"]


class Gemma3UnsupportedConfigError(ValueError):
    """A Gemma 3 config sets something LinguDistill's teacher cannot reproduce exactly."""


# config attribute -> why the teacher cannot follow it
_REFUSED = {
    "final_logit_softcapping": (
        "LinguDistill's teacher head computes plain logits (lm_head only), while Gemma3ForCausalLM would "
        "soft-cap them, so the distillation target would not be the teacher's distribution"
    ),
    "attn_logit_softcapping": (
        "transformers 5.19's Gemma 3 attention ignores it and LinguDistill's KV-sharing attention cannot soft-cap, "
        "so a checkpoint that relies on it would be distilled with attention it was not trained with"
    ),
    "use_bidirectional_attention": (
        "a bidirectional text model (e.g. EmbeddingGemma) is no causal LM; the KV-sharing teacher attends causally"
    ),
}


def refuse_unsupported(text_config: Any, whose: str) -> None:
    """Stop with the value and the fix when a Gemma 3 text config sets what the teacher cannot reproduce."""
    problems = [
        f"{key} = {getattr(text_config, key)!r}: {why}"
        for key, why in _REFUSED.items()
        if getattr(text_config, key, None)
    ]
    if problems:
        raise Gemma3UnsupportedConfigError(
            f"LinguDistill cannot distil with this {whose} config:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nReleased Gemma 3 checkpoints set none of these (all null/false). Fix: use a checkpoint whose config "
            "leaves them unset, or train without LinguDistill."
        )


class Gemma3Family(FamilyAdapter):
    """Gemma 3 VLMs (SigLIP tower, soft image tokens ``<image_soft_token>`` = 262144) with Gemma 3 text teachers.

    What differs from the base, and why it needs no more code than this:
    - rotary positions are plain 1-D sequence positions (no M-RoPE): the base's ``position_ids``/arange is right;
    - local (sliding-window) and global layers have their own rotary bases: each teacher layer applies its own;
    - sliding-window layers pass ``sliding_window`` to the attention function, and KV sharing masks
      ``k > q - window`` exactly as transformers' ``sliding_window_overlay`` does;
    - ``query_pre_attn_scalar`` reaches the attention as ``scaling``; the embedding scale (sqrt(hidden)) is applied
      once in both the VLM and ``Gemma3ForCausalLM``;
    - swift forces eager attention; the router sends it through the modeling file's own ``eager_attention_forward``;
    - soft image tokens may attend bidirectionally among themselves (``token_type_ids``), but the teacher's
      queries are text positions, which attend causally either way, and every image position is shared;
    - configs with soft-capping or bidirectional text attention are refused (see ``refuse_unsupported``).
    """

    name = "gemma3"
    swift_model_types = ("gemma3_vision",)
    hf_model_types = ("gemma3",)

    def text_config(self, config: Any) -> Any:
        text = getattr(config, "text_config", config)
        refuse_unsupported(text, "student")  # called before any model loads, for `self` and separate teachers
        return text

    def check_teacher_config(self, config: Any) -> None:
        """Refuse a separate teacher's config before its weights load (the swift glue calls it while it checks the
        teacher's lineage)."""
        refuse_unsupported(getattr(config, "text_config", config), "teacher")

    def vision_token_ids(self, config: Any) -> tuple[int, ...]:
        # `image_token_id` is an alias of `image_token_index` in Gemma3Config: one id, 262144 in released models.
        return (int(config.image_token_id),)

    def language_model(self, model: nn.Module) -> nn.Module:
        return unwrap_model(model).model.language_model

    def attention_modules(self, decoder: nn.Module) -> list[nn.Module]:
        # Called for the student's and the teacher's decoder when the distiller is built: a teacher built
        # without the swift glue (direct use of the Distiller) is checked here, after it loads and before training.
        refuse_unsupported(decoder.config, "student or teacher")
        return [layer.self_attn for layer in decoder.layers]

    def vision_mask(self, input_ids: torch.Tensor, config: Any) -> torch.Tensor:
        return input_ids == self.vision_token_ids(config)[0]
