"""LLaVA-OneVision as transformers has it (``LlavaOnevisionForConditionalGeneration``, llava-hf/llava-onevision-*)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .base import FamilyAdapter, unwrap_model

__all__ = ["LlavaOnevisionFamily", "image_feature_count"]


class LlavaOnevisionFamily(FamilyAdapter):
    """LLaVA-OneVision-Qwen2 (0.5B / 7B / 72B), built from Qwen2-Instruct LMs; plain 1-D RoPE at the sequence index.

    - ``<image>`` (151646) and ``<video>`` (151647) were added after Qwen2's three special tokens; the published
      7B resizes the vocabulary to 152128 rows (Qwen2-7B-Instruct: 152064). Ids both score are compared.
    - Each image is an any-res grid of SigLIP crops plus a base crop, unpadded to the image's aspect ratio, with a
      learned newline feature after each row of features: its ``<image>`` run is that long. swift's template
      counts it with the processor and transformers checks only the batch's total, so ``check_batch`` compares
      every image's run with the count the model's own layout gives.
    - swift's ``llava_onevision_hf`` template puts no ``position_ids`` in the batch: the sequence index is the
      student's rotary position (base class), as in ``Qwen2Model``.
    """

    name = "llava_onevision"
    swift_model_types = ("llava_onevision_hf",)
    hf_model_types = ("llava_onevision",)

    def vision_token_ids(self, config: Any) -> tuple[int, ...]:
        # image_token_id / video_token_id are aliases of image_token_index / video_token_index here.
        return int(config.image_token_index), int(config.video_token_index)

    def language_model(self, model: nn.Module) -> nn.Module:
        return unwrap_model(model).model.language_model

    def check_batch(self, batch: dict[str, Any], model: nn.Module) -> None:
        """Stop when an image's ``<image>`` run differs from the features the model makes of that image."""
        input_ids = batch.get("input_ids")
        if input_ids is None:
            return
        config = unwrap_model(model).config
        runs = _runs(input_ids, int(config.image_token_index))  # [(row, length)] in batch order
        sizes = batch.get("image_sizes")
        sizes = [] if sizes is None or batch.get("pixel_values") is None else sizes.reshape(-1, 2).tolist()
        if len(runs) != len(sizes):
            raise ValueError(
                f"LLaVA-OneVision: the batch has {len(runs)} <image> placeholders (runs of <image> tokens) but "
                f"{len(sizes)} images; the model would place image features at the wrong tokens. Fix: write one "
                "<image> tag per image in each sample, separated by text (swift's template writes '<image>\\n')."
            )
        for index, ((row, length), (height, width)) in enumerate(zip(runs, sizes, strict=True)):
            expected = image_feature_count(config, int(height), int(width))
            if length != expected:
                raise ValueError(
                    f"LLaVA-OneVision: image {index} (row {row} of the batch, {height}x{width} pixels) has {length} "
                    f"<image> tokens but the model makes {expected} features of it; features would land on the wrong "
                    "tokens. Cause: the checkpoint's processor_config.json disagrees with its config.json "
                    "(num_image_tokens must be (vision image_size / patch_size)^2, vision_feature_select_strategy "
                    "'full', and image_grid_pinpoints / vision_aspect_ratio the model's). Fix: copy those values "
                    "from the released llava-onevision-*-hf processor."
                )


def _runs(input_ids: torch.Tensor, token_id: int) -> list[tuple[int, int]]:
    """(row, length) of every maximal run of ``token_id``, row by row, left to right."""
    found = []
    for row, ids in enumerate((input_ids == token_id).tolist()):
        length = 0
        for hit in [*ids, False]:
            if hit:
                length += 1
            elif length:
                found.append((row, length))
                length = 0
    return found


def image_feature_count(config: Any, height: int, width: int) -> int:
    """Features ``LlavaOnevisionModel.pack_image_features`` makes of one any-res image of ``height`` x ``width``.

    Base crop ((S/p)^2) + the crops' grid unpadded to the image's aspect ratio (downsampled when larger than
    ``anyres_max_N`` crops allow) + one newline feature per row. Uses the model's own grid and unpad helpers.
    """
    from transformers.models.llava_onevision.modeling_llava_onevision import get_anyres_image_grid_shape, unpad_image

    crop = int(config.vision_config.image_size)
    side = crop // int(config.vision_config.patch_size)
    rows, cols = get_anyres_image_grid_shape((height, width), config.image_grid_pinpoints, crop)
    grid = torch.empty(1, rows * side, cols * side, device="meta")  # shape only
    _, cur_h, cur_w = unpad_image(grid, torch.tensor([height, width])).shape
    max_crops = int(config.vision_aspect_ratio.removeprefix("anyres_max_"))  # "anyres_max_9" -> 9
    ratio = math.sqrt(cur_h * cur_w / (max_crops * side**2))
    if ratio > 1.1:  # the model interpolates to int(h // ratio) x int(w // ratio)
        cur_h, cur_w = int(cur_h // ratio), int(cur_w // ratio)
    return side * side + cur_h * cur_w + cur_h
