"""A tokenizer of about a thousand ids, trained on the harness's texts: small vocabularies make fast models.

Every word of the harness is a single token. The Qwen special tokens sit at small ids of our own choosing.
swift's ``Qwen2VLTemplate`` hard-codes the real Qwen ids (151655 / 151656) as class attributes, so
``template.py`` registers a subclass that uses these instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "IMAGE_TOKEN_ID",
    "PAD_TOKEN_ID",
    "SPECIAL_TOKENS",
    "VIDEO_TOKEN_ID",
    "VISION_END_ID",
    "VISION_START_ID",
    "build_tokenizer",
    "chat_pieces",
    "words_of",
]

# id = position in this tuple. The chat markers and vision markers are what swift's Qwen templates write.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # 0: padding
    "<|im_start|>",  # 1
    "<|im_end|>",  # 2: end of a turn (eos)
    "<|vision_start|>",  # 3
    "<|vision_end|>",  # 4
    "<|vision_pad|>",  # 5
    "<|image_pad|>",  # 6: one per merged image patch
    "<|video_pad|>",  # 7
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
)
PAD_TOKEN_ID = 0
EOS_TOKEN_ID = 2
VISION_START_ID = 3
VISION_END_ID = 4
IMAGE_TOKEN_ID = 6
VIDEO_TOKEN_ID = 7
# The chat format's own words (swift's ChatML prompt: "<|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n").
CHAT_WORDS = ("user", "assistant", "system")
# transformers loads any tokenizer next to a qwen2 / qwen2_5_vl config as ``Qwen2Tokenizer`` (it overrides the
# saved class for these model types), which rebuilds a byte-level BPE with this pre-tokenizer from the saved
# vocabulary and merges (pre-tokenizer: transformers' PRETOKENIZE_REGEX). So the harness's tokenizer is such
# a BPE, trained on the harness's texts.
SPLIT_PATTERN = r"\n|\w+|[^\w\s]"  # words and punctuation marks, for the held-out-phrasing check


def words_of(texts: Iterable[str]) -> set[str]:
    """Every token the tokenizer must know to encode ``texts`` (special tokens excluded)."""
    import re

    pattern = re.compile(SPLIT_PATTERN)
    found: set[str] = set()
    for text in texts:
        for special in SPECIAL_TOKENS:
            text = text.replace(special, " ")
        found.update(pattern.findall(text))
    return found


def chat_pieces(prompts: Iterable[str], answers: Iterable[str]) -> list[str]:
    """The text between special tokens in swift's ChatML rendering of these turns (what the BPE must cover)."""
    pieces = {"\n", *(f"{role}\n" for role in CHAT_WORDS)}
    for prompt in prompts:
        pieces |= {f"user\n{prompt}", prompt}  # a prompt after an image starts right after <|vision_end|>
    pieces |= {f"assistant\n{answer}" for answer in answers}
    return sorted(pieces)


def build_tokenizer(texts: Iterable[str], out_dir: str | Path | None = None, multiple_of: int = 64):
    """A byte-level BPE trained on ``texts`` (see ``chat_pieces``) until every pre-token is one token.

    Returns ``(tokenizer, vocab_rows)``: a ``Qwen2Tokenizer`` (what transformers and swift load for these models)
    and the vocabulary size rounded up to ``multiple_of`` (the models' embedding rows). Saved to ``out_dir``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    corpus = sorted(set(texts))
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,  # never reached: merging stops once every pre-token is a single token
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=[tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]],
        unk_token=None,
        pad_token=SPECIAL_TOKENS[PAD_TOKEN_ID],
        eos_token=SPECIAL_TOKENS[EOS_TOKEN_ID],
        model_max_length=512,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(range(len(SPECIAL_TOKENS))):  # the template and the model configs rely on these ids
        raise RuntimeError(f"special tokens landed at {ids}, expected 0..{len(SPECIAL_TOKENS) - 1}")
    for text in corpus:
        if tokenizer.decode(tokenizer(text).input_ids) != text:
            raise RuntimeError(f"the tokenizer does not round-trip {text!r}")
    rows = -(-len(tokenizer) // multiple_of) * multiple_of
    if out_dir is not None:
        tokenizer.save_pretrained(out_dir)
    return tokenizer, rows
