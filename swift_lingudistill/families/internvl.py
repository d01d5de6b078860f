"""InternVL3 in transformers' native format (``InternVLForConditionalGeneration``, ``OpenGVLab/InternVL3-*-hf``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import FamilyAdapter, unwrap_model

__all__ = ["InternVLFamily", "InternVLUnsupportedConfigError"]


class InternVLUnsupportedConfigError(ValueError):
    """An InternVL checkpoint whose language model LinguDistill has not been checked against."""


# Language models whose attention, positions and teacher class were checked with InternVL (see the tests).
_CHECKED_TEXT_MODELS = {"qwen2": "Qwen2.5 (InternVL3-1B ... 78B-hf)"}


class InternVLFamily(FamilyAdapter):
    """InternVL3-*-hf, built from Qwen2.5 LMs (``Qwen2ForCausalLM``); plain 1-D RoPE at the sequence index.

    - Each image is cut into 448-pixel tiles (plus a thumbnail); each tile becomes ``image_seq_length`` (256)
      ``<IMG_CONTEXT>`` tokens between ``<img>`` and ``</img>``. All three are image layout: the teacher (a
      Qwen2.5 LM) has only untrained rows for them, so their K/V always come from the student. The tokenizer
      adds ``<img>``, ``</img>``, ``<IMG_CONTEXT>`` in that order (151665-151667 after Qwen2.5's specials), so
      the markers are ``image_token_id`` - 2 and - 1.
    - swift's ``internvl_hf`` template puts no ``position_ids`` in the batch: the base class's sequence index is
      the student's rotary position, as in ``Qwen2Model``.
    - swift places the image features itself (``masked_scatter`` in the template's ``_post_encode``) and nothing
      checks their count, so ``check_batch`` compares the ``<IMG_CONTEXT>`` tokens with the tiles' features.
    - The published checkpoints carry ``rope_scaling: dynamic x2`` where Qwen2.5-7B-Instruct has none: dynamic
      NTK changes nothing below ``max_position_embeddings`` (32768), so the lineage check accepts the pair when
      ``--max_length`` stays at or below it (swift's default) and refuses above, with the reason.
    """

    name = "internvl"
    swift_model_types = ("internvl",)
    hf_model_types = ("internvl",)

    def text_config(self, config: Any) -> Any:
        text = getattr(config, "text_config", config)
        kind = getattr(text, "model_type", None)
        if kind not in _CHECKED_TEXT_MODELS:
            raise InternVLUnsupportedConfigError(
                f"LinguDistill's internvl adapter is checked with {', '.join(_CHECKED_TEXT_MODELS.values())} "
                f"language models; this checkpoint's is {kind!r} (e.g. InternVL3.5, whose Qwen3 / GPT-OSS language "
                "models are not yet tested). Fix: use an InternVL3-*-hf checkpoint, or train without LinguDistill."
            )
        return text

    def vision_token_ids(self, config: Any) -> tuple[int, ...]:
        """``(<IMG_CONTEXT>, <img>, </img>)``: 151667, 151665, 151666 in the released InternVL3-*-hf tokenizers."""
        context = int(config.image_token_id)
        return context, context - 2, context - 1

    def language_model(self, model: nn.Module) -> nn.Module:
        return unwrap_model(model).model.language_model

    def features_per_tile(self, config: Any) -> int:
        """``<IMG_CONTEXT>`` tokens one tile fills: (image_size / patch_size)^2 patches, pixel-shuffled by
        ``downsample_ratio`` (transformers' ``get_image_features``; the CLS token, if any, is dropped first)."""
        vision = config.vision_config
        side = _first(vision.image_size) // _first(vision.patch_size)
        return int(side * side * config.downsample_ratio**2)

    def check_batch(self, batch: dict[str, Any], model: nn.Module) -> None:
        """Stop when the ``<IMG_CONTEXT>`` tokens differ from the features the batch's tiles produce.

        swift concatenates every row's tiles into one ``pixel_values`` [tiles, 3, H, W] and keeps no per-row tile
        count, so the batch's totals are compared (a per-row error shifts the total too, unless two rows err in
        opposite directions by the same amount).
        """
        input_ids = batch.get("input_ids")
        if input_ids is None:
            return
        config = unwrap_model(model).config
        tokens = int((input_ids == int(config.image_token_id)).sum())
        pixel_values = batch.get("pixel_values")
        tiles = 0 if pixel_values is None else int(pixel_values.shape[0])
        per_tile = self.features_per_tile(config)
        if tokens != tiles * per_tile:
            raise ValueError(
                f"InternVL: the batch has {tokens} <IMG_CONTEXT> tokens but its {tiles} image tiles produce "
                f"{tiles * per_tile} image features ({per_tile} per tile); swift would place the features at the "
                "wrong tokens without an error. Cause: swift 4.6's internvl_hf template repeats <IMG_CONTEXT> "
                "processor.image_seq_length times per tile, and this checkpoint's processor says "
                f"{_processor_hint(tokens, tiles)}. Fix: set image_seq_length to {per_tile} in the checkpoint's "
                "processor_config.json (the released InternVL3-*-hf processors have 256 = (448 / 14)^2 * 0.5^2)."
            )


def _first(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _processor_hint(tokens: int, tiles: int) -> str:
    if tiles and tokens % tiles == 0:
        return f"{tokens // tiles} per tile"
    return "another count"
