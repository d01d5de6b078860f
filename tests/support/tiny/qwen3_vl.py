"""Tiny random Qwen3 LMs and Qwen3-VL models with the real Qwen tokenizer, built locally in seconds.

The student is a ``Qwen3VLForConditionalGeneration`` (patch 16, interleaved M-RoPE, q/k norm, deepstack into
every layer of its tiny language model); its teacher is a ``Qwen3ForCausalLM`` of the same shape, whose
``model.*`` keys match the VLM's ``model.language_model.*`` keys one for one. The tokenizer is the Qwen2/2.5
vocabulary plus the four Qwen3 additions (``<tool_response>``, ``</tool_response>``, ``<think>``,
``</think>`` at 151665-151668), so swift's hard-coded ids (``<|image_pad|>`` = 151655) hold.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from swift_lingudistill.tiny.common import (
    TinySize,
    atomic_build_dir,
    default_cache_dir,
    load_parent_lm,
    perturb_,
    save_checkpoint,
    write_jsonl,
)
from swift_lingudistill.tiny.qwen import QWEN_GENERATION, qwen_tokenizer

__all__ = [
    "QWEN3_EXTRA_TOKENS",
    "QWEN3_VL_CHAT_TEMPLATE",
    "QWEN3_VL_SIZE",
    "build_qwen3_lm",
    "build_qwen3_vl",
    "build_qwen3_vl_assets",
    "build_qwen3_vl_dataset",
    "make_qwen3_lm",
    "make_qwen3_vl",
    "make_qwen3_vl_processor",
    "qwen3_tokenizer",
]

# Added after the Qwen2 specials in every Qwen3 / Qwen3-VL tokenizer (not special: they are ordinary text).
QWEN3_EXTRA_TOKENS: tuple[str, ...] = ("<tool_response>", "</tool_response>", "<think>", "</think>")
QWEN3_EXTRA_START_ID = 151665

QWEN3_VL_SIZE = TinySize()  # hidden 64, 2 layers, 4 heads / 2 KV heads, head size 16, vocab 151936
# Interleaved M-RoPE over half the head size (8 frequencies): T, H, W shares in the ratio of the real [24, 20, 20].
QWEN3_VL_MROPE_SECTION = [4, 2, 2]
PATCH = 16  # Qwen3-VL's vision patch; with merge 2 one image token covers 32x32 pixels

# Qwen3-VL's chat template, compacted: no default system turn, images and videos become pad tokens between
# vision markers. swift formats training data with its own template; this one serves plain transformers.
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen3_tokenizer(cache_dir: Path | None = None):
    """The real Qwen3 tokenizer: the Qwen2/2.5 vocabulary and specials plus Qwen3's four added tokens (cached)."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    def build(out: Path) -> None:
        tokenizer = qwen_tokenizer(cache_dir)
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN3_EXTRA_TOKENS])
        ids = tokenizer.convert_tokens_to_ids(list(QWEN3_EXTRA_TOKENS))
        expected = list(range(QWEN3_EXTRA_START_ID, QWEN3_EXTRA_START_ID + len(QWEN3_EXTRA_TOKENS)))
        if ids != expected:
            raise RuntimeError(f"Qwen3 added tokens landed at {ids}, expected {expected}")
        tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE
        tokenizer.save_pretrained(out)

    path = atomic_build_dir((cache_dir or default_cache_dir()) / "qwen3_tokenizer_v1", build)
    return AutoTokenizer.from_pretrained(path)


def _text_kwargs(size: TinySize) -> dict[str, Any]:
    return dict(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        head_dim=size.head_dim,  # explicit, as in every Qwen3 config (128 there)
        rms_norm_eps=size.rms_norm_eps,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )


def make_qwen3_lm(size: TinySize = QWEN3_VL_SIZE, seed: int = 0):
    """A tiny random ``Qwen3ForCausalLM`` in memory: the text-only "original LM" a Qwen3-VL is built from."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        **_text_kwargs(size),
        rope_parameters={"rope_type": "default", "rope_theta": size.rope_theta},
        bos_token_id=151643,
        eos_token_id=151645,
    )
    return Qwen3ForCausalLM(config).eval()


def build_qwen3_lm(out_dir: str | Path, size: TinySize = QWEN3_VL_SIZE, seed: int = 0, tokenizer=None) -> Path:
    """Save a tiny random Qwen3 LM with the real Qwen3 tokenizer as a local checkpoint."""
    return save_checkpoint(out_dir, make_qwen3_lm(size, seed), tokenizer or qwen3_tokenizer(), QWEN_GENERATION)


def _vision_config(size: TinySize) -> dict[str, Any]:
    return dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=PATCH,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=size.hidden,
        num_position_embeddings=256,  # a 16x16 learned grid, resampled to each image
        deepstack_visual_indexes=[0, 1],  # deepstack features are added after LM layers 0 and 1: all of them
    )


def make_qwen3_vl(
    size: TinySize = QWEN3_VL_SIZE,
    seed: int = 0,
    lm: torch.nn.Module | None = None,
    perturb: float = 0.0,
):
    """A tiny random Qwen3-VL in memory.

    ``lm``: start the language model from that ``Qwen3ForCausalLM`` (same sizes), as real VLMs are built.
    ``perturb``: then add Gaussian noise of ``perturb`` times each tensor's std to the language model,
    standing in for the drift multimodal fine-tuning causes (the "degraded" VLM).
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    text = _text_kwargs(size)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": size.rope_theta,
        "mrope_section": QWEN3_VL_MROPE_SECTION,
        "mrope_interleaved": True,
    }
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=_vision_config(size),
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=False,
    )
    model = Qwen3VLForConditionalGeneration(config).eval()
    if lm is not None:
        # Qwen3ForCausalLM's `model.*` keys (q_norm / k_norm included) match `model.language_model.*` one for one.
        model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
        model.lm_head.load_state_dict(lm.lm_head.state_dict(), strict=True)
    if perturb > 0:
        perturb_([model.model.language_model, model.lm_head], perturb, seed + 1)
    return model


def make_qwen3_vl_processor(tokenizer=None):
    """The Qwen3-VL processor; small images keep tiny models fast (64x64 pixels = 4 merged image tokens)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    grid = dict(patch_size=PATCH, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    pixels = {"shortest_edge": 64 * 64, "longest_edge": 128 * 128}
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, **grid),
        tokenizer=tokenizer or qwen3_tokenizer(),
        video_processor=Qwen3VLVideoProcessor(size={"shortest_edge": 64 * 64, "longest_edge": 4 * 128 * 128}, **grid),
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )


def build_qwen3_vl(
    out_dir: str | Path,
    size: TinySize = QWEN3_VL_SIZE,
    lm_dir: str | Path | None = None,
    perturb: float = 0.0,
    seed: int = 0,
    tokenizer=None,
) -> Path:
    """Save a tiny random Qwen3-VL with its processor as a local checkpoint (see ``make_qwen3_vl``)."""
    model = make_qwen3_vl(size, seed, lm=load_parent_lm(lm_dir), perturb=perturb)
    return save_checkpoint(out_dir, model, make_qwen3_vl_processor(tokenizer), QWEN_GENERATION)


_QA = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Why is the sky blue?", "Air scatters blue light more than red light, so the sky looks blue."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
)
_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220)}


def build_qwen3_vl_dataset(out_dir: str | Path, rows: int = 12, seed: int = 0) -> Path:
    """A small JSONL in swift's ``messages`` + ``images`` format: vision-heavy, language-heavy and text-only rows.

    Image sides are multiples of 32 (patch 16 x merge 2), so swift's resizing keeps them: 4 or 6 image tokens.
    """
    from PIL import Image, ImageDraw

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records = []
    for i in range(rows):
        question, answer = _QA[i % len(_QA)]
        if i % 3 == 2:  # text-only, language-heavy
            records.append(
                {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
            )
            continue
        colour = rng.choice(sorted(_COLOURS))
        size = rng.choice([(64, 64), (96, 64), (64, 96)])
        image = Image.new("RGB", size, (245, 245, 245))
        ImageDraw.Draw(image).rectangle((8, 8, size[0] - 8, size[1] - 8), fill=_COLOURS[colour])
        path = (out_dir / "images" / f"img_{i:03d}.png").resolve()
        image.save(path)
        if i % 3 == 0:  # vision-heavy: counting, which the default rules tag no-distill
            q, a = "<image>How many squares are there in the image?", f"There is one {colour} square."
        else:  # language-heavy: the picture is context, the answer is knowledge
            q, a = f"<image>{question}", answer
        records.append(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "images": [str(path)]}
        )
    path = out_dir / "qwen3_vl.jsonl"
    write_jsonl(path, records)
    return path


def build_qwen3_vl_assets(root: str | Path, perturb: float = 0.5, seed: int = 0) -> dict[str, Path]:
    """The original Qwen3 LM (teacher), the degraded Qwen3-VL built from it (student) and a mixed dataset."""
    root = Path(root)
    tokenizer = qwen3_tokenizer()
    lm = build_qwen3_lm(root / "qwen3_lm", seed=seed, tokenizer=tokenizer)
    vlm = build_qwen3_vl(root / "qwen3_vl", lm_dir=lm, perturb=perturb, seed=seed, tokenizer=tokenizer)
    return {"teacher": lm, "student": vlm, "dataset": build_qwen3_vl_dataset(root / "data", seed=seed)}
