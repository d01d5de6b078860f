"""The harness's models: a small Qwen2 LM (the original LM, the teacher) and a Qwen2.5-VL built from it.

All real transformers classes, built in memory; ``save_vlm`` writes a checkpoint only where the real
``swift sft`` needs one (the demo and the in-process-equals-swift test).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from .vocab import EOS_TOKEN_ID, IMAGE_TOKEN_ID, PAD_TOKEN_ID, VIDEO_TOKEN_ID, VISION_END_ID, VISION_START_ID

__all__ = ["Sizes", "build_vlm", "image_processor", "lm_of", "make_lm", "save_processor", "save_vlm"]

_PIXELS = dict(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, temporal_patch_size=2, merge_size=2)


@dataclass(frozen=True)
class Sizes:
    """Sizes of the language model (the LM and the VLM's language model) and of the vision tower."""

    hidden: int = 64
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    vision_hidden: int = 64
    vision_depth: int = 2
    vision_heads: int = 2
    rope_theta: float = 10_000.0
    rms_norm_eps: float = 1e-6  # set on both configs: Qwen2 and Qwen2.5-VL's text config default differently

    def text_kwargs(self, vocab_rows: int) -> dict:
        return dict(
            vocab_size=vocab_rows,
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=256,
            bos_token_id=PAD_TOKEN_ID,
            eos_token_id=EOS_TOKEN_ID,
            pad_token_id=PAD_TOKEN_ID,
            tie_word_embeddings=False,
        )

    def mrope_section(self) -> list[int]:
        """Half the head size split into (temporal, height, width) rotary sections, as Qwen does."""
        half = self.hidden // self.heads // 2
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]


def make_lm(sizes: Sizes, vocab_rows: int, seed: int):
    """A randomly initialised ``Qwen2ForCausalLM`` (trained from scratch as the original LM)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    rope = {"rope_type": "default", "rope_theta": sizes.rope_theta}
    config = Qwen2Config(**sizes.text_kwargs(vocab_rows), rope_parameters=rope)
    config._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(config)


def _vision_config(sizes: Sizes) -> dict:
    return dict(
        depth=sizes.vision_depth,
        hidden_size=sizes.vision_hidden,
        intermediate_size=2 * sizes.vision_hidden,
        num_heads=sizes.vision_heads,
        out_hidden_size=sizes.hidden,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[sizes.vision_depth - 1],
    )


def build_vlm(lm: torch.nn.Module, sizes: Sizes, seed: int):
    """A Qwen2.5-VL whose language model and head are a copy of ``lm`` (strict load), with a new vision tower."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = sizes.text_kwargs(lm.config.vocab_size)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": sizes.rope_theta,
        "mrope_section": sizes.mrope_section(),
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=_vision_config(sizes),
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        vision_start_token_id=VISION_START_ID,
        vision_end_token_id=VISION_END_ID,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    vlm = Qwen2_5_VLForConditionalGeneration(config)
    # Qwen2ForCausalLM's `model.*` keys are the VLM's `model.language_model.*` keys one for one.
    vlm.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    vlm.lm_head.load_state_dict(lm.lm_head.state_dict(), strict=True)
    return vlm


def lm_of(vlm: torch.nn.Module, sizes: Sizes):
    """A frozen ``Qwen2ForCausalLM`` holding a copy of the VLM's language model and head (A5's teacher)."""
    lm = make_lm(sizes, vlm.lm_head.weight.shape[0], 0)
    lm.model.load_state_dict(copy.deepcopy(vlm.model.language_model.state_dict()), strict=True)
    lm.lm_head.load_state_dict(copy.deepcopy(vlm.lm_head.state_dict()), strict=True)
    return lm.requires_grad_(False).eval()


def image_processor():
    """Qwen2-VL's image processor sized for 56x56 pictures (4 merged image tokens)."""
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(**_PIXELS)


def save_processor(tokenizer, out_dir: Path) -> None:
    """The VLM's processor: the tokenizer plus Qwen2-VL image/video processors sized for 56x56 pictures."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    Qwen2_5_VLProcessor(
        image_processor=image_processor(), tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(**_PIXELS)
    ).save_pretrained(out_dir)


def save_vlm(vlm: torch.nn.Module, tokenizer, out_dir: Path) -> Path:
    """A checkpoint folder ``swift sft`` can load (weights, config, processor)."""
    vlm.save_pretrained(out_dir)
    save_processor(tokenizer, out_dir)
    return out_dir
