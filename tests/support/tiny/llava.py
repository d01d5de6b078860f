"""Tiny random LLaVA-1.5 students, their Vicuna-like teacher LMs, a small tokenizer and data, built locally.

No Llama tokenizer ships in an installed PyPI package, so a small byte-level BPE is trained here in well under a
second (and cached). Nothing in swift's ``llava1_5_hf`` template hard-codes a token id: it reads the image token
from ``processor.image_token`` and writes ``<s>`` / ``</s>`` as literal strings, which are special tokens here.
As in llava-1.5-7b-hf vs Vicuna-7B, the student's vocabulary is the teacher's plus ``<image>`` (last id).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from swift_lingudistill.tiny.common import (
    GenerationIds,
    TinySize,
    atomic_build_dir,
    default_cache_dir,
    load_parent_lm,
    perturb_,
    save_checkpoint,
    write_jsonl,
)

__all__ = [
    "IMAGE_SIDE",
    "IMAGE_TOKEN",
    "LLAVA_SIZE",
    "LLAVA_SPECIAL_TOKENS",
    "TEXT_VOCAB",
    "build_llama_lm",
    "build_llava",
    "build_llava_assets",
    "build_llava_dataset",
    "image_tokens_per_image",
    "llava_tokenizers",
    "make_llama_lm",
    "make_llava",
    "make_llava_processor",
]

LLAVA_SPECIAL_TOKENS: tuple[str, ...] = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2, as in Llama-2 / Vicuna
IMAGE_TOKEN = "<image>"
TEXT_VOCAB = 384  # the teacher's rows; the student has one more, <image> = id 384 (Vicuna 32000, <image> 32000)
# Llama-2-7B's rotary base and norm eps; 4 heads and 4 KV heads, since Llama-2-7B / Vicuna-7B have no GQA.
LLAVA_SIZE = TinySize(kv_heads=4, vocab=TEXT_VOCAB, rope_theta=10000.0, rms_norm_eps=1e-5)
IMAGE_SIDE = 42  # CLIP input side: (42 / 14)^2 = 9 patches, so 9 image tokens per image (CLS dropped)
PATCH = 14

# A compact form of the llava-1.5-hf chat template for plain transformers; swift formats data with its own.
LLAVA_CHAT_TEMPLATE = (
    "<s>{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n"
    "{% elif message['role'] == 'assistant' %}ASSISTANT:{{ message['content'] }}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

_CORPUS = (
    "USER: ASSISTANT: What colour is this? Blue. Red. Green. Yellow. Compare the first and the second image.",
    "The first is red, the second is green, both are squares. How many circles are there in the image?",
    "Tell me a short story about a cat who learns to read. Once upon a time a cat found a book.",
    "What is the capital of France? The capital of France is Paris. Who wrote Romeo and Juliet?",
    "William Shakespeare wrote it. Why is the sky blue? Air scatters blue light more than red light.",
    "Read the digit written in the top-left corner. The digit is 7. There are 3 triangles.",
)


def llava_tokenizers(cache_dir: Path | None = None) -> tuple[Any, Any]:
    """(teacher, student) tokenizers: the same byte-level BPE; the student adds ``<image>`` after the last id."""
    from transformers import AutoTokenizer

    def build(out: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=TEXT_VOCAB,
            special_tokens=list(LLAVA_SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no <unk> in practice
            show_progress=False,
        )
        bpe.train_from_iterator(list(_CORPUS) * 4, trainer)
        if bpe.get_vocab_size() != TEXT_VOCAB:
            raise RuntimeError(f"the tiny BPE has {bpe.get_vocab_size()} tokens, expected {TEXT_VOCAB}")
        specials = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
        teacher = PreTrainedTokenizerFast(tokenizer_object=bpe, **specials)
        teacher.save_pretrained(out / "teacher")
        student = PreTrainedTokenizerFast(tokenizer_object=bpe, **specials)
        student.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        if student.convert_tokens_to_ids(IMAGE_TOKEN) != TEXT_VOCAB:
            raise RuntimeError(f"<image> landed at {student.convert_tokens_to_ids(IMAGE_TOKEN)}, not {TEXT_VOCAB}")
        student.chat_template = LLAVA_CHAT_TEMPLATE
        student.save_pretrained(out / "student")

    path = atomic_build_dir((cache_dir or default_cache_dir()) / "llava_tokenizer_v1", build)
    return AutoTokenizer.from_pretrained(path / "teacher"), AutoTokenizer.from_pretrained(path / "student")


def _llama_kwargs(size: TinySize, vocab: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        rms_norm_eps=size.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": size.rope_theta},
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )


def make_llama_lm(size: TinySize = LLAVA_SIZE, seed: int = 0):
    """A tiny random ``LlamaForCausalLM`` with ``size.vocab`` rows: the Vicuna the student is built from."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**_llama_kwargs(size, size.vocab))).eval()


def make_llava(size: TinySize = LLAVA_SIZE, seed: int = 0, lm: torch.nn.Module | None = None, perturb: float = 0.0):
    """A tiny random ``LlavaForConditionalGeneration`` with ``size.vocab + 1`` rows (``<image>`` last).

    ``lm``: start the language model from that text-only LM (its rows become the first ``size.vocab`` rows,
    the ``<image>`` row stays random), as LLaVA-1.5 starts from Vicuna. ``perturb``: then add Gaussian noise
    of ``perturb`` times each tensor's std to the language model (the drift of multimodal fine-tuning).
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIDE,
        patch_size=PATCH,
        projection_dim=32,
    )
    config = LlavaConfig(
        text_config={"model_type": "llama", **_llama_kwargs(size, size.vocab + 1)},
        vision_config=vision,
        image_token_index=size.vocab,
        image_seq_length=image_tokens_per_image(),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(config).eval()
    if lm is not None:
        source = lm.model.state_dict()
        target = model.model.language_model
        embed = source.pop("embed_tokens.weight")  # [V, H] into the student's [V + 1, H]
        result = target.load_state_dict(source, strict=False)
        if result.missing_keys != ["embed_tokens.weight"] or result.unexpected_keys:
            raise RuntimeError(f"the text LM does not fit the student's language model: {result}")
        with torch.no_grad():
            target.embed_tokens.weight[: embed.shape[0]].copy_(embed)
            model.lm_head.weight[: embed.shape[0]].copy_(lm.lm_head.weight)
    if perturb > 0:
        perturb_([model.model.language_model, model.lm_head], perturb, seed + 1)
    return model


def image_tokens_per_image() -> int:
    """CLIP patches per image plus its CLS token, minus the CLS the 'default' feature strategy drops."""
    return (IMAGE_SIDE // PATCH) ** 2 + 1 - 1


def make_llava_processor(tokenizer=None):
    """``LlavaProcessor`` with what swift's template reads to count image tokens itself (measured with ms-swift 4.6)."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIDE}, crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or llava_tokenizers()[1],
        patch_size=PATCH,
        num_additional_image_tokens=1,  # CLIP's CLS
        vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


LLAMA_GENERATION = GenerationIds(bos=1, eos=2, pad=0)  # <s>, </s> and id 0 for padding, as Llama-2 / Vicuna


def build_llama_lm(out_dir: str | Path, size: TinySize = LLAVA_SIZE, seed: int = 0, tokenizer=None) -> Path:
    """Save a tiny random Llama LM with the teacher tokenizer (no ``<image>``) as a local checkpoint."""
    return save_checkpoint(out_dir, make_llama_lm(size, seed), tokenizer or llava_tokenizers()[0], LLAMA_GENERATION)


def build_llava(
    out_dir: str | Path,
    size: TinySize = LLAVA_SIZE,
    lm_dir: str | Path | None = None,
    perturb: float = 0.0,
    seed: int = 0,
    tokenizer=None,
) -> Path:
    """Save a tiny random LLaVA-1.5 with its processor as a local checkpoint (see ``make_llava``)."""
    model = make_llava(size, seed, lm=load_parent_lm(lm_dir), perturb=perturb)
    return save_checkpoint(out_dir, model, make_llava_processor(tokenizer), LLAMA_GENERATION)


_FACTS = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote it."),
    ("Why is the sky blue?", "Air scatters blue light more than red light."),
    ("Tell me a short story about a cat.", "Once upon a time a cat found a book."),
)
_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}


def _turns(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def build_llava_dataset(out_dir: str | Path, rows: int = 8, seed: int = 0) -> Path:
    """A small JSONL in swift's ``messages`` + ``images`` format; returns the file's path.

    Rows cycle through: a knowledge question next to an image (language-heavy), a text-only question, and a
    counting question about the image (vision-heavy by the default tagging patterns). Images are PIL-drawn
    squares and rectangles of 48-64 pixels, which the CLIP processor resizes and crops to 42x42.
    """
    from PIL import Image, ImageDraw

    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records = []
    for i in range(rows):
        question, answer = _FACTS[i % len(_FACTS)]
        kind = i % 3
        if kind == 1:  # text-only
            records.append({"messages": _turns(question, answer)})
            continue
        colour = rng.choice(sorted(_COLOURS))
        count = rng.randint(1, 3)
        size = rng.choice([(48, 48), (64, 48), (48, 64)])
        image = Image.new("RGB", size, (245, 245, 245))
        draw = ImageDraw.Draw(image)
        for k in range(count):
            x = 4 + k * (size[0] - 8) // count
            draw.rectangle((x, 12, x + (size[0] - 8) // count - 4, size[1] - 12), fill=_COLOURS[colour])
        path = image_dir / f"img_{i:03d}.png"
        image.save(path)
        if kind == 0:
            q, a = f"<image>{question}", answer
        else:
            q, a = "<image>How many squares are there in the image?", f"There are {count}."
        records.append({"messages": _turns(q, a), "images": [str(path)]})
    path = out_dir / "llava.jsonl"
    write_jsonl(path, records)
    return path


def build_llava_assets(root: str | Path, perturb: float = 0.5, seed: int = 0) -> dict[str, Path]:
    """The original LM (teacher), the LLaVA student built from it and perturbed, and a small dataset."""
    root = Path(root)
    teacher_tok, student_tok = llava_tokenizers()
    lm = build_llama_lm(root / "vicuna", seed=seed, tokenizer=teacher_tok)
    vlm = build_llava(root / "llava", lm_dir=lm, perturb=perturb, seed=seed, tokenizer=student_tok)
    data = build_llava_dataset(root / "data", seed=seed)
    return {"teacher": lm, "student": vlm, "dataset": data}
