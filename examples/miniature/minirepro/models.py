"""The miniature's models: a small Qwen2 LM (the original LM, the teacher) and a Qwen2.5-VL built from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .vocab import EOS_TOKEN_ID, IMAGE_TOKEN_ID, PAD_TOKEN_ID, VIDEO_TOKEN_ID, VISION_END_ID, VISION_START_ID

__all__ = ["Sizes", "build_vlm", "image_processor", "make_lm", "make_vision_tower", "save_processor", "vision_config"]


@dataclass(frozen=True)
class Sizes:
    """Sizes of the language model (shared by the LM and the VLM's language model) and of the vision tower."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
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
            max_position_embeddings=512,
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
    """A randomly initialised ``Qwen2ForCausalLM`` (trained from scratch by ``pretrain``)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    rope = {"rope_type": "default", "rope_theta": sizes.rope_theta}
    return Qwen2ForCausalLM(Qwen2Config(**sizes.text_kwargs(vocab_rows), rope_parameters=rope))


def vision_config(sizes: Sizes) -> dict:
    """The Qwen2.5-VL vision tower: 14 px patches merged 2x2, so an 84x84 picture is 9 tokens."""
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


def make_vision_tower(sizes: Sizes, seed: int) -> torch.nn.Module:
    """A randomly initialised Qwen2.5-VL vision tower (with its merger into the LM's hidden size)."""
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    torch.manual_seed(seed)
    return Qwen2_5_VisionTransformerPretrainedModel._from_config(Qwen2_5_VLVisionConfig(**vision_config(sizes)))


def build_vlm(lm_dir: Path, vision_state: dict, out_dir: Path, sizes: Sizes) -> Path:
    """A Qwen2.5-VL from the LM (language model and head, strict load) and the pre-trained vision tower."""
    from transformers import AutoModelForCausalLM, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    text = sizes.text_kwargs(lm.config.vocab_size)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": sizes.rope_theta,
        "mrope_section": sizes.mrope_section(),
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision_config(sizes),
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        vision_start_token_id=VISION_START_ID,
        vision_end_token_id=VISION_END_ID,
        tie_word_embeddings=False,
    )
    vlm = Qwen2_5_VLForConditionalGeneration(config)
    # Qwen2ForCausalLM's `model.*` keys are the VLM's `model.language_model.*` keys one for one.
    vlm.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    vlm.lm_head.load_state_dict(lm.lm_head.state_dict(), strict=True)
    vlm.model.visual.load_state_dict(vision_state, strict=True)
    vlm.save_pretrained(out_dir)
    save_processor(lm_dir, out_dir)
    return out_dir


def image_processor():
    """Qwen2-VL's image processor sized for the miniature's 84x84 pictures."""
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(**_PIXELS)


_PIXELS = dict(min_pixels=56 * 56, max_pixels=84 * 84, patch_size=14, temporal_patch_size=2, merge_size=2)


def save_processor(lm_dir: Path, out_dir: Path) -> None:
    """The VLM's processor: the LM's tokenizer plus Qwen2-VL image/video processors sized for 84x84 pictures."""
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    Qwen2_5_VLProcessor(
        image_processor=image_processor(),
        tokenizer=AutoTokenizer.from_pretrained(lm_dir),
        video_processor=Qwen2VLVideoProcessor(**_PIXELS),
    ).save_pretrained(out_dir)
