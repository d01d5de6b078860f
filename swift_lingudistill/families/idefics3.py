"""Idefics3 (SmolVLM's architecture): a Llama text model behind a SigLIP-style tower with pixel-shuffled tiles."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import FamilyAdapter, unwrap_model

__all__ = ["Idefics3Family"]


class Idefics3Family(FamilyAdapter):
    """Idefics3-8B-Llama3 (Llama 3.1) and SmolVLM v1 (SmolLM2); 1-D RoPE at the sequence index.

    Vision positions are the whole text each ``<image>`` expands to, not only the ``<image>`` tokens:
    ``<fake_token_around_image>``, the tile markers (``<row_1_col_1>``, ``<global-img>``) and the newlines between
    tile rows. They are image layout, not language: transformers' own processor marks that whole span as
    multimodal (``mm_token_type_ids``), and depending on the tokenizer the markers are added tokens the teacher
    lacks (which the core shares anyway) or plain text pieces the teacher never saw in that role (Idefics3-8B-Llama3,
    SmolVLM-Instruct). Counting the span as vision gives one behaviour for both: the teacher reads the student's
    K/V over the image's whole layout, and its own K/V only where the user's and the assistant's text is.

    swift 4.6's template can insert too few ``<image>`` tokens and transformers does not check the count, so
    ``check_batch`` compares the tokens with the features the pixel values produce.
    """

    name = "idefics3"
    swift_model_types = ("idefics3",)
    hf_model_types = ("idefics3",)

    def language_model(self, model: nn.Module) -> nn.Module:
        return unwrap_model(model).model.text_model

    def vision_token_ids(self, config: Any) -> tuple[int, ...]:
        """``(<image>, <fake_token_around_image>)``.

        The config holds only the image id. Idefics3Processor adds ``<fake_token_around_image>``, ``<image>``,
        ``<end_of_utterance>`` in that order, so the fake token is the image id minus one (128256 / 128257 in
        Idefics3-8B-Llama3 and swift's template, 49152 / 49153 in SmolVLM-Instruct).
        """
        image = int(config.image_token_id)
        return image, int(getattr(config, "fake_image_token_id", None) or image - 1)

    def vision_mask(self, input_ids: torch.Tensor, config: Any) -> torch.Tensor:
        """[B, L] bool: ``<image>``, ``<fake_token_around_image>`` and the tile markers / newlines between them.

        A marker run is a stretch of other tokens from a fake token to the next ``<image>`` (``<row_1_col_2>``,
        ``<global-img>``) or from an ``<image>`` to the next fake token (the newlines ending a tile row). User text
        sits only between a closing fake token and the next opening one, so it is never counted.
        """
        image_id, fake_id = self.vision_token_ids(config)
        image = input_ids == image_id  # [B, L]
        fake = input_ids == fake_id
        delim = image | fake
        seq_len = input_ids.shape[-1]
        pos = torch.arange(seq_len, device=input_ids.device).expand_as(input_ids)  # [B, L]
        last = torch.where(delim, pos, -1).cummax(dim=-1).values  # [B, L]: last delimiter at or before
        prev = torch.cat([last.new_full(last[:, :1].shape, -1), last[:, :-1]], dim=-1)  # strictly before
        first = torch.where(delim, pos, seq_len).flip(-1).cummin(dim=-1).values.flip(-1)  # first at or after
        nxt = torch.cat([first[:, 1:], first.new_full(first[:, :1].shape, seq_len)], dim=-1)  # strictly after

        def at(mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            inside = (index >= 0) & (index < seq_len)
            return mask.gather(-1, index.clamp(0, seq_len - 1)) & inside

        markers = (at(fake, prev) & at(image, nxt)) | (at(image, prev) & at(fake, nxt))
        return delim | (markers & ~delim)

    # rotary_positions: the base class's (position_ids if given, else the sequence index), as LlamaModel's.

    def image_features_per_tile(self, config: Any) -> int:
        """``<image>`` tokens one tile fills: (image_size / patch_size)^2 patches, pixel-shuffled by scale_factor."""
        vision = config.vision_config
        return int((vision.image_size // vision.patch_size) ** 2 / config.scale_factor**2)

    def check_batch(self, batch: dict[str, Any], model: nn.Module) -> None:
        """Stop when the ``<image>`` tokens of a row differ from the features its tiles produce.

        transformers' Idefics3 scatters the features into the ``<image>`` positions without checking the count,
        so a mismatch trains on misplaced image features with no error. (swift's template also hard-codes
        ``<image>`` = 128257: a checkpoint with other ids, e.g. SmolVLM's, keeps one token per image and stops here.)
        """
        input_ids = batch.get("input_ids")
        if input_ids is None:
            return
        config = unwrap_model(model).config
        image_id, fake_id = self.vision_token_ids(config)
        tokens = (input_ids == image_id).sum(dim=-1)  # [B]
        pixel_values = batch.get("pixel_values")
        if pixel_values is None:
            tiles = torch.zeros(0, dtype=torch.long, device=input_ids.device)
        else:
            pixels = pixel_values if pixel_values.dim() == 5 else pixel_values[None]  # [B_img, N, C, H, W]
            tiles = pixels.flatten(2).ne(0).any(dim=-1).sum(dim=-1)  # [B_img]: padding tiles are all zeros
        per_tile = self.image_features_per_tile(config)
        has_images = ((input_ids == image_id) | (input_ids == fake_id)).any(dim=-1)  # [B]
        if len(tiles) == len(tokens):
            rows = list(range(len(tokens)))
        elif len(tiles) == int(has_images.sum()):  # swift concatenates pixel values of image rows only
            rows = has_images.nonzero().flatten().tolist()
        else:  # packed rows or an unexpected layout: compare the totals
            rows, tokens, tiles = [None], tokens.sum()[None], tiles.sum()[None]
        for row, n_tiles in zip(rows, tiles.tolist(), strict=True):
            n_tokens = int(tokens[row if row is not None else 0])
            if n_tokens != n_tiles * per_tile:
                self._raise_count_mismatch(row, n_tokens, n_tiles, per_tile)

    @staticmethod
    def _raise_count_mismatch(row: int | None, n_tokens: int, n_tiles: int, per_tile: int) -> None:
        where = "the batch (all rows)" if row is None else f"row {row} of the batch"
        raise ValueError(
            f"Idefics3: {where} has {n_tokens} <image> tokens but its {n_tiles} image tiles produce "
            f"{n_tiles * per_tile} image features ({per_tile} per tile); transformers would place image features "
            "at the wrong tokens without an error. Cause: swift 4.6's idefics3 template stops expanding an <image> "
            "placeholder at the first token equal to the one that follows it, so '<image><image>' or "
            "'<image>\\n...' in a user turn loses image tokens. Fix: in that sample, follow every <image> with a "
            "word (e.g. '<image>Describe the picture.' or '<image> What is this?'), never with a newline, a digit, "
            "'<' or another <image>."
        )
