"""Tiny random LLaVA-OneVision students (``LlavaOnevisionForConditionalGeneration``) and their Qwen2 teachers.

As in llava-hf/llava-onevision-qwen2-7b-ov-hf against Qwen/Qwen2-7B-Instruct: the real Qwen byte-level vocabulary
with Qwen2's three special tokens (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` at 151643-151645), the
student's ``<image>`` / ``<video>`` at 151646 / 151647 (the id swift's ``llava_onevision_hf`` template hard-codes),
152128 student rows against the teacher's 152064. The SigLIP tower sees 28-pixel crops of 14-pixel patches (4
features a crop) on an any-res grid of up to 3 crops a side; swift counts an image's ``<image>`` tokens with the
processor's ``num_image_tokens``, ``image_grid_pinpoints`` and ``vision_aspect_ratio``, which are saved with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from swift_lingudistill.tiny.common import TinySize, load_parent_lm, perturb_, save_checkpoint
from swift_lingudistill.tiny.qwen import QWEN_GENERATION, make_qwen2_lm, qwen_vocab_tokenizer
from tests.support.tiny.qwen3_vl import build_qwen3_vl_dataset
from tests.support.tiny.text_lm import copy_text_lm

__all__ = [
    "LLAVA_OV_SIZE",
    "LLAVA_OV_VOCAB",
    "QWEN2_SPECIAL_TOKENS",
    "TEACHER_SIZE",
    "build_llava_onevision",
    "build_llava_onevision_assets",
    "build_qwen2_original_lm",
    "llava_onevision_tokenizers",
    "make_llava_onevision",
    "make_llava_onevision_processor",
]

QWEN2_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # Qwen2-*-Instruct's only specials
IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
IMAGE_TOKEN_ID, VIDEO_TOKEN_ID = 151646, 151647
LLAVA_OV_VOCAB = 152128  # llava-onevision-qwen2-7b-ov-hf's rows
LLAVA_OV_SIZE = TinySize(vocab=LLAVA_OV_VOCAB)  # hidden 64, 2 layers, 4 heads / 2 KV heads, rope 1e6, eps 1e-6
TEACHER_SIZE = TinySize(vocab=152064)  # Qwen2-7B-Instruct's rows
CROP, PATCH = 28, 14
FEATURES_PER_CROP = (CROP // PATCH) ** 2
GRID_PINPOINTS = [[CROP * r, CROP * c] for r in (1, 2, 3) for c in (1, 2, 3)]

QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def llava_onevision_tokenizers(cache_dir: Path | None = None) -> tuple[Any, Any]:
    """(teacher, student): Qwen2's tokenizer, and the same plus ``<image>`` 151646 and ``<video>`` 151647."""
    from tokenizers import AddedToken

    teacher = qwen_vocab_tokenizer(QWEN2_SPECIAL_TOKENS, "qwen2_tokenizer_v1", QWEN2_CHAT_TEMPLATE, cache_dir)
    student = qwen_vocab_tokenizer(QWEN2_SPECIAL_TOKENS, "qwen2_tokenizer_v1", QWEN2_CHAT_TEMPLATE, cache_dir)
    student.add_tokens([AddedToken(t, special=True, normalized=False) for t in (IMAGE_TOKEN, VIDEO_TOKEN)], True)
    if student.convert_tokens_to_ids([IMAGE_TOKEN, VIDEO_TOKEN]) != [IMAGE_TOKEN_ID, VIDEO_TOKEN_ID]:
        raise RuntimeError("<image> / <video> did not land at 151646 / 151647")
    return teacher, student


def build_qwen2_original_lm(out_dir: str | Path, size: TinySize = TEACHER_SIZE, seed: int = 0) -> Path:
    """A tiny random Qwen2 LM with Qwen2's own (three-special) tokenizer: the LLaVA-OneVision teacher."""
    return save_checkpoint(out_dir, make_qwen2_lm(size, seed), llava_onevision_tokenizers()[0], QWEN_GENERATION)


def make_llava_onevision(
    size: TinySize = LLAVA_OV_SIZE, seed: int = 0, lm: torch.nn.Module | None = None, perturb: float = 0.0
):
    """A tiny random ``LlavaOnevisionForConditionalGeneration``.

    ``lm``: start the language model from that Qwen2 LM (its rows become the first rows of the student's larger
    vocabulary, the rest stay random). ``perturb``: then add Gaussian noise of ``perturb`` times each tensor's std
    to the language model (the drift of multimodal fine-tuning).
    """
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    torch.manual_seed(seed)
    text = dict(
        model_type="qwen2",
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        rms_norm_eps=size.rms_norm_eps,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": size.rope_theta},
        tie_word_embeddings=False,
    )
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=CROP,
        patch_size=PATCH,
        vision_use_head=False,
    )
    config = LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=IMAGE_TOKEN_ID,
        video_token_index=VIDEO_TOKEN_ID,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    if lm is not None:
        copy_text_lm(model.model.language_model, model.lm_head, lm)
    if perturb > 0:
        perturb_([model.model.language_model, model.lm_head], perturb, seed + 1)
    return model


def make_llava_onevision_processor(tokenizer=None):
    """The processor with what swift's template reads to count an image's tokens (``_get_number_of_features``)."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    crop = {"height": CROP, "width": CROP}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=crop, image_grid_pinpoints=GRID_PINPOINTS),
        tokenizer=tokenizer or llava_onevision_tokenizers()[1],
        video_processor=LlavaOnevisionVideoProcessor(size=crop),
        num_image_tokens=FEATURES_PER_CROP,
        vision_feature_select_strategy="full",  # swift never subtracts a CLS token; SigLIP has none
        vision_aspect_ratio="anyres_max_9",
        chat_template=QWEN2_CHAT_TEMPLATE,
    )


def build_llava_onevision(
    out_dir: str | Path,
    size: TinySize = LLAVA_OV_SIZE,
    lm_dir: str | Path | None = None,
    perturb: float = 0.0,
    seed: int = 0,
    tokenizer=None,
) -> Path:
    """Save a tiny random LLaVA-OneVision with its processor as a local checkpoint (see ``make_llava_onevision``)."""
    model = make_llava_onevision(size, seed, lm=load_parent_lm(lm_dir), perturb=perturb)
    return save_checkpoint(out_dir, model, make_llava_onevision_processor(tokenizer), QWEN_GENERATION)


def build_llava_onevision_assets(root: str | Path, perturb: float = 0.5, seed: int = 0) -> dict[str, Path]:
    """The Qwen2 teacher (152064 rows), the LLaVA-OneVision student built from it (152128 rows), and data."""
    root = Path(root)
    teacher = build_qwen2_original_lm(root / "qwen2_lm", seed=seed)
    student = build_llava_onevision(root / "llava_onevision", lm_dir=teacher, perturb=perturb, seed=seed)
    return {"teacher": teacher, "student": student, "dataset": build_qwen3_vl_dataset(root / "data", seed=seed)}
