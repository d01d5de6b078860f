"""Tiny random Idefics3 (SmolVLM's architecture) students, their Llama teacher LMs, a tokenizer and data, built locally.

swift 4.6's ``idefics3`` template hard-codes Idefics3-8B-Llama3's ids (``<fake_token_around_image>`` 128256,
``<image>`` 128257, ``<end_of_utterance>`` 128258) and writes ``<|begin_of_text|>`` as a literal prefix, so the
tokenizer keeps Llama 3's layout: text ids below 128000 (a small byte-level BPE trained here in under a second,
then unused filler entries), Llama 3's special tokens at 128000-128255, and the three Idefics3 tokens after them.
No Llama 3 tokenizer ships in an installed PyPI package. As in Idefics3-8B-Llama3 vs Llama-3.1-8B-Instruct, the
teacher has 128256 rows and its tokenizer lacks the three Idefics3 tokens; the student has 128259 rows.
Embedding rows cost little at hidden size 64.
"""

from __future__ import annotations

import json
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
    "END_OF_UTTERANCE",
    "FAKE_IMAGE_TOKEN",
    "IDEFICS3_CHAT_TEMPLATE",
    "IDEFICS3_SIZE",
    "IDEFICS3_TOKEN_IDS",
    "IDEFICS3_VOCAB",
    "IMAGE_TOKEN",
    "TEACHER_VOCAB",
    "TOKENS_PER_TILE",
    "build_idefics3",
    "build_idefics3_assets",
    "build_idefics3_dataset",
    "build_llama3_lm",
    "idefics3_tokenizers",
    "make_idefics3",
    "make_idefics3_processor",
    "make_llama3_lm",
]

TEACHER_VOCAB = 128256  # Llama-3.1's rows: text ids < 128000, special tokens 128000-128255
IDEFICS3_VOCAB = 128259  # the student's rows: the teacher's plus the three tokens below
FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE = "<fake_token_around_image>", "<image>", "<end_of_utterance>"
IDEFICS3_TOKEN_IDS = {FAKE_IMAGE_TOKEN: 128256, IMAGE_TOKEN: 128257, END_OF_UTTERANCE: 128258}  # swift's ids
_TEXT_IDS = 128000
_LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", *(f"<|reserved_special_token_{i}|>" for i in range(254)))
_BPE_SIZE = 400  # trained pieces; ids up to 127999 are unused fillers

# Llama-3.1-8B's rotary base and norm eps (rope scaling aside); 4 heads, 2 KV heads as in its GQA.
IDEFICS3_SIZE = TinySize(vocab=IDEFICS3_VOCAB, rope_theta=500000.0, rms_norm_eps=1e-5)

# Vision tower: 56-pixel tiles of 14-pixel patches = 16 patches, pixel-shuffled by 2 -> 4 <image> tokens a tile.
TILE, PATCH, SCALE = 56, 14, 2
TOKENS_PER_TILE = (TILE // PATCH) ** 2 // SCALE**2
LONGEST_EDGE = 2 * TILE  # images are resized to at most 2 x 2 tiles (plus the global tile)

# The Idefics3 format swift's template writes: "<|begin_of_text|>User:...<end_of_utterance>\nAssistant:...".
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}"
    "{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

_CORPUS = (
    "User: Assistant: What colour is this? Blue. Red. Green. Yellow. Compare the first and the second image.",
    "The first is red, the second is green, both are squares. How many circles are there in the image?",
    "Tell me a short story about a cat who learns to read. Once upon a time a cat found a book.",
    "What is the capital of France? The capital of France is Paris. Who wrote Romeo and Juliet?",
    "William Shakespeare wrote it. Why is the sky blue? Air scatters blue light more than red light.",
    "Read the digit written in the top-left corner. The digit is 7. There are 3 triangles. Describe it.",
    "<row_1_col_1><row_1_col_2><row_2_col_1><row_2_col_2><global-img>\n",
)


def idefics3_tokenizers(cache_dir: Path | None = None) -> tuple[Any, Any]:
    """(teacher, student) tokenizers in Llama 3's id layout; the student adds the three Idefics3 tokens."""
    from transformers import AutoTokenizer

    def build(out: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        def byte_level(model) -> Tokenizer:
            tokenizer = Tokenizer(model)
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
            return tokenizer

        trained = byte_level(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=_BPE_SIZE,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no <unk> in practice
            show_progress=False,
        )
        trained.train_from_iterator(list(_CORPUS) * 4, trainer)
        spec = json.loads(trained.to_str())["model"]
        vocab: dict[str, int] = spec["vocab"]
        # Unreachable fillers (no merge makes them) put the special tokens at Llama 3's ids.
        vocab.update({f"<|unused_{i}|>": i for i in range(len(vocab), _TEXT_IDS)})
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["merges"]]
        bpe = byte_level(models.BPE(vocab=vocab, merges=merges))
        specials = dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", pad_token=_LLAMA3_SPECIALS[2])
        for name, extra in (("teacher", []), ("student", list(IDEFICS3_TOKEN_IDS))):
            tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, **specials)
            tokenizer.add_special_tokens({"additional_special_tokens": [*_LLAMA3_SPECIALS[2:], *extra]})
            ids = tokenizer.convert_tokens_to_ids([_LLAMA3_SPECIALS[0], *extra])
            want = [_TEXT_IDS, *IDEFICS3_TOKEN_IDS.values()][: len(ids)]
            if ids != want or len(tokenizer) != (IDEFICS3_VOCAB if extra else TEACHER_VOCAB):
                raise RuntimeError(f"tiny Llama 3 tokenizer: special ids {ids}, expected {want}")
            if extra:
                tokenizer.chat_template = IDEFICS3_CHAT_TEMPLATE
            tokenizer.save_pretrained(out / name)

    path = atomic_build_dir((cache_dir or default_cache_dir()) / "idefics3_tokenizer_v1", build)
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
        bos_token_id=_TEXT_IDS,
        eos_token_id=_TEXT_IDS + 1,
        pad_token_id=_TEXT_IDS + 2,
        tie_word_embeddings=False,
    )


def make_llama3_lm(size: TinySize = IDEFICS3_SIZE, seed: int = 0, vocab: int = TEACHER_VOCAB):
    """A tiny random ``LlamaForCausalLM``: the Llama 3 text LM an Idefics3 student is built from.

    ``vocab``: 128256 rows as Llama-3.1 (the e2e teacher); pass ``IDEFICS3_VOCAB`` for a teacher that can also
    read the student's added tokens (the direct tests compare it with a plain forward on the student's ids).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**_llama_kwargs(size, vocab))).eval()


def make_idefics3(
    size: TinySize = IDEFICS3_SIZE,
    seed: int = 0,
    lm: torch.nn.Module | None = None,
    perturb: float = 0.0,
):
    """A tiny random ``Idefics3ForConditionalGeneration`` in memory (vision: 2 layers, hidden 32, 56-pixel tiles).

    ``lm``: start the language model from that text-only LM (its rows are copied; the student's extra rows for
    the Idefics3 tokens stay random), as real VLMs are built. ``perturb``: then add Gaussian noise of ``perturb``
    times each tensor's std to the language model, standing in for multimodal fine-tuning's drift.
    """
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    torch.manual_seed(seed)
    config = Idefics3Config(
        text_config={"model_type": "llama", **_llama_kwargs(size, size.vocab)},
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=TILE,
            patch_size=PATCH,
        ),
        scale_factor=SCALE,
        image_token_id=IDEFICS3_TOKEN_IDS[IMAGE_TOKEN],
        pad_token_id=_TEXT_IDS + 2,
        tie_word_embeddings=False,
    )
    model = Idefics3ForConditionalGeneration(config).eval()
    if lm is not None:
        rows = lm.lm_head.weight.shape[0]
        state = lm.model.state_dict()
        embed = model.model.text_model.embed_tokens.weight.detach().clone()
        embed[:rows] = state.pop("embed_tokens.weight")
        state["embed_tokens.weight"] = embed
        model.model.text_model.load_state_dict(state, strict=True)  # LlamaModel keys match one for one
        with torch.no_grad():
            model.lm_head.weight[:rows] = lm.lm_head.weight
    if perturb > 0:
        perturb_([model.model.text_model, model.lm_head], perturb, seed + 1)
    return model


def make_idefics3_processor(tokenizer=None, do_image_splitting: bool = True):
    """The Idefics3 processor: images resized to at most 2 x 2 tiles of 56 pixels plus a global tile."""
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": LONGEST_EDGE},
        max_image_size={"longest_edge": TILE},
        do_image_splitting=do_image_splitting,
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer if tokenizer is not None else idefics3_tokenizers()[1],
        image_seq_len=TOKENS_PER_TILE,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )


LLAMA3_GENERATION = GenerationIds(
    bos=_TEXT_IDS, eos=[IDEFICS3_TOKEN_IDS[END_OF_UTTERANCE], _TEXT_IDS + 1], pad=_TEXT_IDS + 2
)


def build_llama3_lm(out_dir: str | Path, size: TinySize = IDEFICS3_SIZE, seed: int = 0) -> Path:
    """Save a tiny random Llama 3 LM (128256 rows) with the teacher tokenizer as a local checkpoint."""
    return save_checkpoint(out_dir, make_llama3_lm(size, seed), idefics3_tokenizers()[0], LLAMA3_GENERATION)


def build_idefics3(
    out_dir: str | Path,
    size: TinySize = IDEFICS3_SIZE,
    lm_dir: str | Path | None = None,
    perturb: float = 0.0,
    seed: int = 0,
) -> Path:
    """Save a tiny random Idefics3 with its processor as a local checkpoint (see ``make_idefics3``)."""
    model = make_idefics3(size, seed, lm=load_parent_lm(lm_dir), perturb=perturb)
    return save_checkpoint(out_dir, model, make_idefics3_processor(), LLAMA3_GENERATION)


_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
_FACTS = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote it."),
    ("Why is the sky blue?", "Air scatters blue light more than red light."),
)


def _draw(path: Path, colour: str, size: tuple[int, int], seed: int) -> None:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", size, (245, 245, 245))
    w, h = size
    x, y = rng.randint(0, w // 2), rng.randint(0, h // 2)
    ImageDraw.Draw(image).rectangle((x, y, x + w // 3, y + h // 3), fill=_COLOURS[colour])
    image.save(path)


def build_idefics3_dataset(out_dir: str | Path, rows: int = 6, seed: int = 0) -> Path:
    """A small JSONL in swift's ``messages`` + ``images`` format: image rows (one with two images), text-only rows.

    Every ``<image>`` is followed by a word, never by a newline or another ``<image>``: swift 4.6's idefics3
    template inserts too few image tokens in those cases (see ``families/idefics3.py``).
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sizes = [(112, 56), (56, 56), (56, 112)]
    records = []
    for i in range(rows):
        question, answer = _FACTS[i % len(_FACTS)]
        colour = rng.choice(sorted(_COLOURS))
        if i % 3 == 2:  # text-only, language-heavy
            records.append(
                {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
            )
            continue
        n_images = 2 if i % 3 == 1 else 1
        paths = []
        for k in range(n_images):
            path = image_dir / f"img_{i:03d}_{k}.png"
            _draw(path, colour, sizes[(i + k) % len(sizes)], seed * 100 + i * 10 + k)
            paths.append(str(path.resolve()))
        prompt = "".join("<image>Look. " for _ in paths) + f"What colour is the square? {question}"
        records.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": f"It is {colour}. {answer}"},
                ],
                "images": paths,
            }
        )
    path = out_dir / "idefics3_data.jsonl"
    write_jsonl(path, records)
    return path


def build_idefics3_assets(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Teacher LM, a student built from it then perturbed, and the dataset, under ``root``."""
    root = Path(root)
    teacher = build_llama3_lm(root / "teacher", seed=seed)
    student = build_idefics3(root / "student", lm_dir=teacher, perturb=0.5, seed=seed)
    dataset = build_idefics3_dataset(root / "data", seed=seed)
    return {"teacher": teacher, "student": student, "dataset": dataset}
