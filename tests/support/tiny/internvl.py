"""Tiny random InternVL3-hf students (transformers' ``InternVLForConditionalGeneration``) and their Qwen2.5 teachers.

As in OpenGVLab/InternVL3-*-hf: the real Qwen2.5 tokenizer plus nine added tokens at 151665-151673 (``<img>``,
``</img>``, ``<IMG_CONTEXT>``, ``<quad>``, ``</quad>``, ``<ref>``, ``</ref>``, ``<box>``, ``</box>``), the tokenizer's
named image tokens that InternVLProcessor reads, 151674 embedding rows against the teacher's 152064 (Qwen2.5-7B's
padded rows), and ``rope_scaling: dynamic x2`` on the student's language model where the teacher has none.
swift's ``internvl_hf`` template repeats ``<IMG_CONTEXT>`` ``image_seq_length`` times per tile and tiles every
image (``crop_to_patches``), so the processor is saved with both set for 56-pixel tiles: 4 tokens a tile.
"""

from __future__ import annotations

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
)
from swift_lingudistill.tiny.qwen import QWEN_GENERATION, build_qwen2_lm, qwen_tokenizer
from tests.support.tiny.qwen3_vl import build_qwen3_vl_dataset
from tests.support.tiny.text_lm import copy_text_lm

__all__ = [
    "INTERNVL_SIZE",
    "INTERNVL_TOKENS",
    "INTERNVL_VOCAB",
    "TEACHER_SIZE",
    "TOKENS_PER_TILE",
    "build_internvl",
    "build_internvl_assets",
    "internvl_tokenizer",
    "make_internvl",
    "make_internvl_processor",
]

INTERNVL_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")
INTERNVL_TOKENS_START = 151665
INTERNVL_VOCAB = 151674  # the student's rows; <IMG_CONTEXT> = 151667
IMAGE_TOKEN_ID = 151667
INTERNVL_SIZE = TinySize(vocab=INTERNVL_VOCAB)  # hidden 64, 2 layers, 4 heads / 2 KV heads, rope 1e6, eps 1e-6
TEACHER_SIZE = TinySize(vocab=152064)  # Qwen2.5-7B-Instruct's embedding rows
MAX_POSITIONS = 4096  # the tiny language models' max_position_embeddings (dynamic NTK's threshold)
TILE, PATCH, DOWNSAMPLE = 56, 14, 0.5
TOKENS_PER_TILE = int((TILE // PATCH) ** 2 * DOWNSAMPLE**2)  # 16 patches, pixel-shuffled by 0.5 -> 4
MAX_TILES = 4  # the processor's max_patches: small images give 1-5 tiles (a thumbnail joins a grid of 2+)

# InternVL3-hf's chat format (ChatML); swift formats training data with its own template.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_NAMED_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",  # added after the model's rows, as the processor asks for it; never in image rows
}


def internvl_tokenizer(cache_dir: Path | None = None):
    """The InternVL3-hf tokenizer: Qwen2.5's plus the nine InternVL tokens and the named image tokens (cached)."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    def build(out: Path) -> None:
        tokenizer = qwen_tokenizer(cache_dir)
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in INTERNVL_TOKENS], True)
        ids = tokenizer.convert_tokens_to_ids(list(INTERNVL_TOKENS))
        if ids != list(range(INTERNVL_TOKENS_START, INTERNVL_TOKENS_START + len(INTERNVL_TOKENS))):
            raise RuntimeError(f"InternVL tokens landed at {ids}, expected 151665-151673")
        tokenizer.chat_template = INTERNVL_CHAT_TEMPLATE
        tokenizer.save_pretrained(out / "base")
        named = AutoTokenizer.from_pretrained(out / "base", extra_special_tokens=_NAMED_TOKENS)
        named.save_pretrained(out / "named")

    path = atomic_build_dir((cache_dir or default_cache_dir()) / "internvl_tokenizer_v1", build)
    return AutoTokenizer.from_pretrained(path / "named")


def _text_config(size: TinySize) -> dict[str, Any]:
    return dict(
        model_type="qwen2",
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        rms_norm_eps=size.rms_norm_eps,
        max_position_embeddings=MAX_POSITIONS,
        # As published: dynamic NTK x2, which changes nothing below max_position_embeddings.
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": size.rope_theta},
        bos_token_id=151643,
        eos_token_id=151645,
        tie_word_embeddings=False,
    )


def make_internvl(
    size: TinySize = INTERNVL_SIZE, seed: int = 0, lm: torch.nn.Module | None = None, perturb: float = 0.0
):
    """A tiny random ``InternVLForConditionalGeneration`` (vision tower: 56-pixel tiles of 14-pixel patches).

    ``lm``: start the language model from that Qwen2 LM (its first ``size.vocab`` rows; the teacher may have
    more, as Qwen2.5-7B's 152064 against InternVL3-8B's 151674). ``perturb``: then add Gaussian noise of
    ``perturb`` times each tensor's std to the language model (the drift of multimodal fine-tuning).
    """
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    torch.manual_seed(seed)
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=[TILE, TILE],
        patch_size=[PATCH, PATCH],
    )
    config = InternVLConfig(
        text_config=_text_config(size),
        vision_config=vision,
        image_token_id=IMAGE_TOKEN_ID,
        image_seq_length=TOKENS_PER_TILE,
        downsample_ratio=DOWNSAMPLE,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,  # the published config says true at the top level; the weights are untied
    )
    model = InternVLForConditionalGeneration(config).eval()
    if lm is not None:
        copy_text_lm(model.model.language_model, model.lm_head, lm)
    if perturb > 0:
        perturb_([model.model.language_model, model.lm_head], perturb, seed + 1)
    return model


def make_internvl_processor(tokenizer=None):
    """InternVLProcessor with 56-pixel tiles (at most ``MAX_TILES`` a image) and ``TOKENS_PER_TILE`` tokens a tile."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    image_processor = GotOcr2ImageProcessor(
        size={"height": TILE, "width": TILE}, crop_to_patches=True, min_patches=1, max_patches=MAX_TILES
    )
    return InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or internvl_tokenizer(),
        video_processor=InternVLVideoProcessor(size={"height": TILE, "width": TILE}),
        image_seq_length=TOKENS_PER_TILE,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )


def build_internvl(
    out_dir: str | Path,
    size: TinySize = INTERNVL_SIZE,
    lm_dir: str | Path | None = None,
    perturb: float = 0.0,
    seed: int = 0,
    tokenizer=None,
) -> Path:
    """Save a tiny random InternVL3-hf with its processor as a local checkpoint (see ``make_internvl``)."""
    model = make_internvl(size, seed, lm=load_parent_lm(lm_dir), perturb=perturb)
    return save_checkpoint(out_dir, model, make_internvl_processor(tokenizer), QWEN_GENERATION)


def build_internvl_assets(root: str | Path, perturb: float = 0.5, seed: int = 0) -> dict[str, Path]:
    """The Qwen2.5-like teacher (152064 rows, no rope scaling), the InternVL student built from it, and data."""
    root = Path(root)
    teacher = build_qwen2_lm(root / "qwen2_5_lm", TEACHER_SIZE, seed)
    student = build_internvl(root / "internvl", lm_dir=teacher, perturb=perturb, seed=seed)
    return {"teacher": teacher, "student": student, "dataset": build_qwen3_vl_dataset(root / "data", seed=seed)}
