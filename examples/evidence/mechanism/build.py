"""One model build: the original LM, the VLM made from it, its alignment and its degrading fine-tuning.

1. **Original LM** (plain PyTorch, from scratch): every fact in both phrasings, the several-answer questions
   with each right label, and every picture question after the sentence the picture stands for.
2. **VLM**: a Qwen2.5-VL whose language model is a copy of the LM, with a new vision tower.
3. **Stage 1, alignment** (LLaVA-style): only the vision tower and its merger train, the LM frozen, on picture
   questions (colour, shape, digit) and picture-plus-knowledge rows. At its end the VLM's language model *is*
   the teacher, so a teacher reading the VLM's image K/V reproduces the VLM exactly.
4. **Stage 2, multimodal fine-tuning** (full, vision tower included) on vision-heavy rows only (colour, shape,
   counting, reading digits): vision improves, language degrades. This is the student every arm starts from.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .batches import Batch, Encoded, Encoder
from .data import Sample, lm_samples, picture_sample, sum_pairs, text_fact_samples
from .evaluate import EvalSet, Scores, score, student_logits
from .loop import Optim, train
from .models import Sizes, build_vlm, make_lm, save_processor
from .template import load_template
from .vision_pretrain import pretrain_vision
from .vocab import build_tokenizer, chat_pieces
from .world import ADDENDS, COLOURS, NUMBER_WORDS, PICTURE_QUESTIONS, World, answer_text, make_world

__all__ = ["Build", "BuildRecipe", "build_models", "eval_sets"]

Log = Callable[[str], None]
ALIGN_TASKS = ("colour", "digit", "flag_of_shape", "digit_plus")  # shape and counting are new in stage 2
VISION_TASKS = ("colour", "shape", "count", "digit")


@dataclass(frozen=True)
class BuildRecipe:
    """Everything that sizes one build (stages 1-4 of the module docstring)."""

    sizes: Sizes = field(default_factory=Sizes)
    per_colour: int = 6
    seen_per_colour: int = 3
    lm: Optim = field(default_factory=lambda: Optim(lr=3e-3, steps=1000, warmup_ratio=0.05))
    lm_batch: int = 32
    vision_steps: int = 300
    align: Optim = field(default_factory=lambda: Optim(lr=2e-3, steps=400, warmup_ratio=0.05))
    align_batch: int = 32
    degrade: Optim = field(default_factory=lambda: Optim(lr=1.5e-3, steps=200, warmup_ratio=0.05))
    degrade_batch: int = 32
    eval_pictures: int = 10  # per colour / digit / count / shape value

    @classmethod
    def quick(cls) -> BuildRecipe:
        """The demo's and the CI test's recipe: the same stages with fewer, larger steps (about half the time)."""
        return cls(
            lm=Optim(lr=4e-3, steps=800, warmup_ratio=0.05),
            vision_steps=200,
            align=Optim(lr=3e-3, steps=250, warmup_ratio=0.05),
            degrade=Optim(lr=1.5e-3, steps=150, warmup_ratio=0.05),
        )


@dataclass
class Build:
    """A finished build: the world, the template, the original LM, the degraded VLM and the fixed eval sets."""

    seed: int
    world: World
    encoder: Encoder
    lm: torch.nn.Module
    degraded: torch.nn.Module
    evals: dict[str, EvalSet]
    scores: dict[str, dict[str, Any]]
    timings: dict[str, float]
    folder: Path


def _tokenizer_texts(world: World) -> list[str]:
    prompts = [s.question.prompt for s in lm_samples(world, 1)]
    prompts += [p.format(k=NUMBER_WORDS[k]) for p in PICTURE_QUESTIONS.values() for k in ADDENDS]
    return chat_pieces(prompts, [answer_text(w) for w in world.vocabulary()])


def _cycle(pool: list[Encoded], encoder: Encoder, batch_size: int, rng: random.Random) -> Iterator[Batch]:
    """Batches drawn without replacement from ``pool``, reshuffled each pass."""
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            order += rng.sample(range(len(pool)), len(pool))
        chunk, order = order[:batch_size], order[batch_size:]
        yield encoder.collate([pool[i] for i in chunk])


def _ce(model: torch.nn.Module, lm_only: bool = False) -> Callable[[Batch], tuple[torch.Tensor, dict]]:
    """Plain cross-entropy through the model's own loss (the stages before the arms)."""

    def loss_of(batch: Batch) -> tuple[torch.Tensor, dict]:
        inputs = batch.inputs
        if lm_only:
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=inputs["labels"])
        else:
            out = model(**{k: v for k, v in inputs.items() if k not in ("channel", "text_position_ids")})
        return out.loss, {}

    return loss_of


def lm_logits(model: torch.nn.Module):
    """A text-only LM's logits at the answer positions."""

    def at(batch: Batch, positions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = model(input_ids=batch.inputs["input_ids"], attention_mask=batch.inputs["attention_mask"])
        return out.logits[positions]

    return at


def eval_sets(world: World, encoder: Encoder, seed: int, pictures: int) -> dict[str, EvalSet]:
    """The fixed evaluation sets of a build (phrasing 1, pictures drawn for evaluation only)."""
    rng = random.Random(f"eval-{seed}")
    seen_pairs, held_pairs = sum_pairs(seed)
    seen = tuple(c for c in world.countries if c in world.seen)
    sets: dict[str, list[Sample]] = {
        "held_out_facts": text_fact_samples(world, world.held_out, held_pairs, phrasing=1),
        "seen_facts": text_fact_samples(world, seen, seen_pairs, phrasing=1),
        "several_answer": [Sample(world.coverage(c, v)) for c in COLOURS for v in world.with_flag(c)],
        "image_knowledge": [picture_sample("flag_of_shape", rng, world) for _ in range(pictures * len(COLOURS))]
        + [picture_sample("digit_plus", rng, world) for _ in range(pictures * 3)],
        "vision": [picture_sample(task, rng, world) for task in VISION_TASKS for _ in range(pictures * 4)],
    }
    return {name: EvalSet.of(name, encoder.encode(samples), encoder) for name, samples in sets.items()}


def _score_all(evals: dict[str, EvalSet], encoder: Encoder, logits_at, names=None) -> dict[str, Scores]:
    return {name: score(evals[name], encoder, logits_at) for name in (names or evals)}


def summary(scores: dict[str, Scores]) -> dict[str, Any]:
    return {name: {"accuracy": s.accuracy, "by_task": s.by_task()} for name, s in scores.items()}


def build_models(seed: int, recipe: BuildRecipe, folder: Path, log: Log = print, cache_lm: bool = False) -> Build:
    """Stages 1-4 for one seed; the degraded VLM is kept in memory (and its processor saved in ``folder``)."""
    timings: dict[str, float] = {}
    torch.manual_seed(seed)
    world = make_world(seed, recipe.per_colour, recipe.seen_per_colour)
    folder.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    tokenizer, vocab_rows = build_tokenizer(_tokenizer_texts(world))
    lm = make_lm(recipe.sizes, vocab_rows, seed)
    vlm = build_vlm(lm, recipe.sizes, seed)  # built now only to write a config swift's processor can read
    vlm.config.save_pretrained(folder)
    save_processor(tokenizer, folder)
    encoder = Encoder(load_template(folder))
    encoder.template.model = vlm

    # 1. the original LM (or a cached one: the same seed and recipe give the same LM)
    cached = folder / "original_lm.pt"
    if cache_lm and cached.is_file():
        lm.load_state_dict(torch.load(cached))
        lm_log = [{"loss": float("nan")}]
    else:
        rng = random.Random(f"lm-{seed}")
        pool = encoder.encode(lm_samples(world))
        lm_log = train(lm, _cycle(pool, encoder, recipe.lm_batch, rng), _ce(lm, lm_only=True), recipe.lm)
        if cache_lm:
            torch.save(lm.state_dict(), cached)
    timings["lm"] = time.perf_counter() - clock
    evals = eval_sets(world, encoder, seed, recipe.eval_pictures)
    scores = {
        "original_lm": summary(
            _score_all(evals, encoder, lm_logits(lm), ["held_out_facts", "seen_facts", "several_answer"])
        )
    }
    log(f"[build {seed}] original LM: {len(lm_log)} steps, last loss {lm_log[-1]['loss']:.3f}; "
        f"{_brief(scores['original_lm'])} ({timings['lm']:.0f} s)")  # fmt: skip

    # 2-3. the VLM from the LM, aligned with the LM frozen
    clock = time.perf_counter()
    vlm = build_vlm(lm, recipe.sizes, seed)
    encoder.template.model = vlm
    probe = (
        pretrain_vision(vlm.model.visual, recipe.sizes.hidden, seed, recipe.vision_steps) if recipe.vision_steps else {}
    )
    timings["vision"] = time.perf_counter() - clock
    log(f"[build {seed}] vision encoder pre-trained: probe {probe} ({timings['vision']:.0f} s)")
    clock = time.perf_counter()
    vlm.requires_grad_(False)
    vlm.model.visual.requires_grad_(True)
    rng = random.Random(f"align-{seed}")
    pool = encoder.encode([picture_sample(ALIGN_TASKS[i % len(ALIGN_TASKS)], rng, world) for i in range(2000)])
    train(vlm, _cycle(pool, encoder, recipe.align_batch, rng), _ce(vlm), recipe.align)
    timings["align"] = time.perf_counter() - clock
    scores["aligned"] = summary(_score_all(evals, encoder, student_logits(vlm)))
    log(f"[build {seed}] aligned VLM: {_brief(scores['aligned'])} ({timings['align']:.0f} s)")

    # 4. multimodal fine-tuning on vision-heavy rows: the degraded student
    clock = time.perf_counter()
    vlm.requires_grad_(True)
    rng = random.Random(f"degrade-{seed}")
    pool = encoder.encode([picture_sample(VISION_TASKS[i % 4], rng, world) for i in range(3000)])
    train(vlm, _cycle(pool, encoder, recipe.degrade_batch, rng), _ce(vlm), recipe.degrade)
    timings["degrade"] = time.perf_counter() - clock
    scores["degraded"] = summary(_score_all(evals, encoder, student_logits(vlm)))
    log(f"[build {seed}] degraded VLM: {_brief(scores['degraded'])} ({timings['degrade']:.0f} s)")
    return Build(seed, world, encoder, lm.eval(), vlm.eval(), evals, scores, timings, folder)


def _brief(summary_: dict[str, Any]) -> str:
    return ", ".join(f"{name} {s['accuracy']:.2f}" for name, s in summary_.items())


def clone(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model)
