"""Tiny random Gemma 3 models (``Gemma3ForCausalLM`` and the vision-language ``Gemma3ForConditionalGeneration``),
a local tokenizer with Gemma 3's special-token ids, a processor and a small dataset, built locally in seconds.

No Gemma tokenizer ships in an installed package, so the tokenizer is built here: a ``GemmaTokenizer``
(byte-fallback BPE) over single characters, with every id swift's ``gemma3_vision`` template hard-codes at its
real value (``<start_of_image>`` 255999, ``<end_of_image>`` 256000, ``<image_soft_token>`` 262144) and
262,208 embedding rows, as in the released checkpoints. Text tokenizes character by character, which keeps
sequences longer than the tiny sliding window, so the sliding mask really matters in the tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from swift_lingudistill.tiny.common import (
    GenerationIds,
    atomic_build_dir,
    default_cache_dir,
    load_parent_lm,
    perturb_,
    save_checkpoint,
    write_jsonl,
)

__all__ = [
    "BOI_ID",
    "EOI_ID",
    "GEMMA3_CHAT_TEMPLATE",
    "GEMMA3_SIZE",
    "GEMMA3_VOCAB_SIZE",
    "IMAGE_SOFT_ID",
    "Gemma3Size",
    "build_gemma3_assets",
    "build_gemma3_dataset",
    "build_gemma3_lm",
    "build_gemma3_vl",
    "gemma3_tokenizer",
    "make_gemma3_lm",
    "make_gemma3_processor",
    "make_gemma3_vl",
]

# Ids swift's Gemma3VisionTemplate and transformers' Gemma3Config use (the released gemma-3 tokenizer's).
BOI_ID = 255999  # <start_of_image>
EOI_ID = 256000  # <end_of_image>
IMAGE_SOFT_ID = 262144  # <image_soft_token>: the positions the vision features replace
GEMMA3_VOCAB_SIZE = 262208  # embedding rows of every Gemma 3 VLM checkpoint (tokenizer ids 0..262144, padded)
_SPECIAL_IDS: dict[int, str] = {
    0: "<pad>",
    1: "<eos>",
    2: "<bos>",
    3: "<unk>",
    4: "<mask>",
    105: "<start_of_turn>",
    106: "<end_of_turn>",
    BOI_ID: "<start_of_image>",
    EOI_ID: "<end_of_image>",
    IMAGE_SOFT_ID: "<image_soft_token>",
}
_BYTE_START = 217  # <0x00>..<0xFF>: byte fallback for characters outside the small alphabet
_CHAR_START = 500  # "\n", "▁" (space) and printable ASCII, one token each
_TOKENIZER_VERSION = "gemma3_tokenizer_v1"

# A compact Gemma 3 chat template (swift formats training data with its own `gemma3_vision` template; this one
# serves plain transformers). `<start_of_image>` is the placeholder the processor expands into the image tokens.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<start_of_image>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class Gemma3Size:
    """Sizes of the tiny Gemma 3 language model (the VLM's and its teacher's) and vision tower.

    ``sliding_window`` is far below the test sequences' lengths (about 40-70 tokens) and the 13 tokens of an
    image (two newlines, ``<start_of_image>``, 9 soft tokens, ``<end_of_image>``, two newlines), so the local
    layers' window cuts through images and text. ``query_pre_attn_scalar`` differs from ``head_dim``, so an
    attention that ignored Gemma's ``scaling`` would break the identity checks.
    """

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    intermediate: int = 128
    sliding_window: int = 8
    sliding_window_pattern: int = 2  # layer i slides unless (i + 1) % pattern == 0: [sliding, full]
    rope_theta: float = 1_000_000.0  # global (full-attention) layers
    rope_local_base_freq: float = 10_000.0  # local (sliding) layers
    query_pre_attn_scalar: int = 24
    rms_norm_eps: float = 1e-6
    image_size: int = 48
    patch_size: int = 8
    mm_tokens_per_image: int = 9  # 6x6 patches pooled 2x2 -> 3x3 soft tokens


GEMMA3_SIZE = Gemma3Size()


def gemma3_tokenizer(cache_dir: Path | None = None):
    """A local ``GemmaTokenizer`` with Gemma 3's special ids (built once, cached; about 0.5 s to load)."""
    from transformers import AutoTokenizer

    def build(out: Path) -> None:
        from tokenizers import AddedToken
        from transformers import GemmaTokenizer

        fixed = dict(_SPECIAL_IDS)
        fixed.update({_BYTE_START + b: f"<0x{b:02X}>" for b in range(256)})
        alphabet = ["\n", "▁"] + [chr(c) for c in range(33, 127)]
        fixed.update({_CHAR_START + i: ch for i, ch in enumerate(alphabet)})
        # Dense ids 0..262144 like the released tokenizer; unused rows get placeholder names no text produces.
        vocab = {fixed.get(i, f"<unused_tiny_{i}>"): i for i in range(IMAGE_SOFT_ID + 1)}
        tokenizer = GemmaTokenizer(
            vocab=vocab,
            merges=[],
            boi_token=_SPECIAL_IDS[BOI_ID],
            eoi_token=_SPECIAL_IDS[EOI_ID],
            image_token=_SPECIAL_IDS[IMAGE_SOFT_ID],
        )
        added = [AddedToken(tok, special=True, normalized=False) for i, tok in _SPECIAL_IDS.items() if i > 4]
        tokenizer.add_special_tokens({"additional_special_tokens": added})
        got = tokenizer.convert_tokens_to_ids(list(_SPECIAL_IDS.values()))
        if got != list(_SPECIAL_IDS):  # swift's hard-coded ids would point at the wrong tokens
            raise RuntimeError(f"Gemma 3 special tokens landed at {got}, expected {list(_SPECIAL_IDS)}")
        tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
        tokenizer.save_pretrained(out)

    path = atomic_build_dir((cache_dir or default_cache_dir()) / _TOKENIZER_VERSION, build)
    return AutoTokenizer.from_pretrained(path)


def _text_kwargs(size: Gemma3Size, attn_implementation: str) -> dict[str, Any]:
    return dict(
        vocab_size=GEMMA3_VOCAB_SIZE,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        head_dim=size.head_dim,
        sliding_window=size.sliding_window,
        sliding_window_pattern=size.sliding_window_pattern,
        rope_theta=size.rope_theta,
        rope_local_base_freq=size.rope_local_base_freq,
        query_pre_attn_scalar=size.query_pre_attn_scalar,
        rms_norm_eps=size.rms_norm_eps,
        max_position_embeddings=4096,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=[1, 106],
        attn_implementation=attn_implementation,
    )


def make_gemma3_lm(size: Gemma3Size = GEMMA3_SIZE, seed: int = 0, attn_implementation: str = "sdpa", **overrides):
    """A tiny random ``Gemma3ForCausalLM`` in memory: the text-only LM (teacher). ``overrides`` go to the config."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(**{**_text_kwargs(size, attn_implementation), **overrides})
    model = Gemma3ForCausalLM(config).eval()
    # transformers initialises Gemma's RMSNorm weights to 0 (scale 1 + w); random ones make every norm matter.
    _randomise_norms(model, seed)
    return model


def _randomise_norms(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=gen))


def make_gemma3_vl(
    size: Gemma3Size = GEMMA3_SIZE,
    seed: int = 0,
    lm: torch.nn.Module | None = None,
    perturb: float = 0.0,
    attn_implementation: str = "eager",
):
    """A tiny random ``Gemma3ForConditionalGeneration`` (SigLIP tower) in memory; eager attention, as swift forces.

    ``lm``: start the language model from that ``Gemma3ForCausalLM`` (same sizes), as real VLMs are built.
    ``perturb``: then add noise to the language model (the "degraded" VLM a teacher should pull back).
    """
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=size.image_size,
        patch_size=size.patch_size,
        vision_use_head=False,
    )
    config = Gemma3Config(
        text_config=_text_kwargs(size, attn_implementation),
        vision_config=vision,
        mm_tokens_per_image=size.mm_tokens_per_image,
        boi_token_index=BOI_ID,
        eoi_token_index=EOI_ID,
        image_token_index=IMAGE_SOFT_ID,
        attn_implementation=attn_implementation,
    )
    model = Gemma3ForConditionalGeneration(config).eval()
    _randomise_norms(model.model.language_model, seed)
    with torch.no_grad():  # transformers initialises the projection to 0: every image would look the same
        projection = model.model.multi_modal_projector.mm_input_projection_weight
        projection.copy_(0.05 * torch.randn(projection.shape, generator=torch.Generator().manual_seed(seed + 3)))
    if lm is not None:
        # Gemma3ForCausalLM's `model.*` keys match the VLM's `model.language_model.*` one for one; the output
        # layer is tied to the embeddings on both sides.
        model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
        model.lm_head.load_state_dict(lm.lm_head.state_dict(), strict=True)
    if perturb > 0:
        perturb_([model.model.language_model, model.lm_head], perturb, seed + 1)
    return model


def make_gemma3_processor(tokenizer=None, size: Gemma3Size = GEMMA3_SIZE):
    """``Gemma3Processor``: images resized to ``image_size`` square, ``mm_tokens_per_image`` soft tokens each."""
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    image_processor = Gemma3ImageProcessor(
        size={"height": size.image_size, "width": size.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer or gemma3_tokenizer(),
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=size.mm_tokens_per_image,
    )


GEMMA3_GENERATION = GenerationIds(bos=2, eos=[1, 106], pad=0)  # <bos>, <eos> / <end_of_turn>, <pad>


def build_gemma3_lm(
    out_dir: str | Path, size: Gemma3Size = GEMMA3_SIZE, seed: int = 0, tokenizer=None, **overrides
) -> Path:
    """Save a tiny random ``Gemma3ForCausalLM`` (swift model_type ``gemma3_text``) with the tokenizer."""
    model = make_gemma3_lm(size, seed, **overrides)
    return save_checkpoint(out_dir, model, tokenizer or gemma3_tokenizer(), GEMMA3_GENERATION)


def build_gemma3_vl(
    out_dir: str | Path,
    size: Gemma3Size = GEMMA3_SIZE,
    lm_dir: str | Path | None = None,
    perturb: float = 0.0,
    seed: int = 0,
    tokenizer=None,
) -> Path:
    """Save a tiny random Gemma 3 VLM (swift model_type ``gemma3_vision``) with its processor."""
    model = make_gemma3_vl(size, seed, lm=load_parent_lm(lm_dir), perturb=perturb)
    return save_checkpoint(out_dir, model, make_gemma3_processor(tokenizer, size), GEMMA3_GENERATION)


_FACTS = (
    ("Capital of France?", "Paris."),
    ("Legs on a spider?", "Eight."),
    ("Who wrote Hamlet?", "Shakespeare."),
    ("Why is the sky blue?", "Air scatters blue light."),
)
_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220)}


def build_gemma3_dataset(out_dir: str | Path, rows: int = 12, seed: int = 0) -> Path:
    """A small JSONL in swift's ``messages`` + ``images`` format: vision-heavy, language-heavy with an image,
    and text-only rows in turn (short texts: the tokenizer is character level). Returns the file's path."""
    from PIL import Image, ImageDraw

    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records = []
    for i in range(rows):
        kind = i % 3
        question, answer = _FACTS[i % len(_FACTS)]
        if kind == 2:  # text-only: language-heavy
            records.append(
                {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
            )
            continue
        colour = rng.choice(sorted(_COLOURS))
        width, height = rng.choice([(48, 48), (72, 48), (48, 64)])  # resized to 48x48 by the processor
        image = Image.new("RGB", (width, height), (245, 245, 245))
        ImageDraw.Draw(image).ellipse((8, 8, width - 8, height - 8), fill=_COLOURS[colour])
        path = image_dir / f"img_{i:03d}.png"
        image.save(path)
        if kind == 0:  # vision-heavy: the answer is in the pixels
            query, reply = "<image>Count the circles.", "One."
        else:  # language-heavy: the image is context
            query, reply = f"<image>{question}", answer
        records.append(
            {
                "messages": [{"role": "user", "content": query}, {"role": "assistant", "content": reply}],
                "images": [str(path.resolve())],
            }
        )
    path = out_dir / "gemma3.jsonl"
    write_jsonl(path, records)
    return path


def build_gemma3_assets(root: str | Path, perturb: float = 0.5, seed: int = 0) -> dict[str, Path]:
    """The teacher LM, the degraded VLM built from it, and the dataset, saved under ``root``."""
    root = Path(root)
    tokenizer = gemma3_tokenizer()
    lm = build_gemma3_lm(root / "teacher_lm", seed=seed, tokenizer=tokenizer)
    vlm = build_gemma3_vl(root / "student_vlm", lm_dir=lm, perturb=perturb, seed=seed, tokenizer=tokenizer)
    data = build_gemma3_dataset(root / "data", seed=seed)
    return {"teacher": lm, "student": vlm, "dataset": data}
