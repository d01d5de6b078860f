"""One seed of the miniature, end to end: original LM -> VLM -> degraded VLM -> the recoveries, all scored.

Stage 1 (plain PyTorch): the original LM learns the facts and sums; a vision tower learns the pictures.
Stage 2 (``swift sft``): multimodal fine-tuning on pictures only; the VLM learns to see and forgets language.
Stage 3 (``swift sft``, same data, steps and seed): a mixture of vision-heavy and language-heavy rows, trained
(a) plainly, (a') plainly as a LinguDistill run with lambda 0 (carries the monitor), (b) with uniform and
(c) with selective LinguDistill; the teacher is the original LM.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import Example, language_rows, read_jsonl, row, vision_rows, write_jsonl
from .evaluate import score_checkpoint
from .images import SHAPES, VISION_PROMPTS
from .models import Sizes, build_vlm, make_lm
from .pretrain import PretrainRecipe, pretrain_lm
from .swift_cli import MINIATURE_DIR, swift_sft
from .template import load_template
from .vision_pretrain import VisionRecipe, pretrain_vision
from .vocab import build_tokenizer, chat_pieces
from .world import World, answer_text, make_world

__all__ = ["RECOVERY_RUNS", "Recipe", "check_tags", "recovery_config", "run_seed"]

CONFIG_DIR = MINIATURE_DIR / "configs"
# run name -> plugin config under configs/ (None: plain `swift sft`, no LinguDistill at all)
RECOVERY_RUNS: dict[str, str | None] = {
    "plain": None,
    "plain_monitor": "plain_monitor.yaml",
    "uniform": "uniform.yaml",
    "selective": "selective.yaml",
}
DISTILLED_CATEGORIES = {"knowledge", "text"}  # what the selective rules must distil (the paper's split)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """Everything that sizes one seed's run; the defaults are the README's table."""

    countries: int = 24
    sizes: Sizes = field(default_factory=lambda: Sizes(layers=2))
    lm: PretrainRecipe = field(default_factory=lambda: PretrainRecipe(steps=1000))
    fact_repeats: int = 2  # facts are repeated in the LM's data so they weigh more than the 100 sums
    vision: VisionRecipe = field(default_factory=lambda: VisionRecipe(steps=800))
    batch_size: int = 8
    stage2_steps: int = 2000
    stage2_lr: float = 1e-3
    recovery_steps: int = 200
    recovery_lr: float = 5e-4
    language_share: float = 0.1  # language-heavy rows in the recovery mixture
    language_with_image: float = 0.5  # of those, asked next to an unrelated picture
    label_noise: float = 0.0  # of those, answers that disagree with the facts (investigation only)
    eval_steps: int = 50
    val_rows: int = 32
    monitor_rows: int = 96
    vision_test_rows: int = 200
    runs: tuple[str, ...] = tuple(RECOVERY_RUNS)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # run -> {"loss.lambda": 2.0, ...}


def _tokenizer_texts(world: World) -> list[str]:
    questions = world.questions("train") + world.questions("test")
    prompts = [q.prompt for q in questions] + [p for prompts, _ in VISION_PROMPTS.values() for p in prompts]
    answers = [answer_text(q.answer) for q in questions] + [answer_text(s) for s in SHAPES]
    return chat_pieces(prompts, answers)


def _lm_rows(world: World, recipe: Recipe) -> list[dict]:
    questions = world.questions("train")
    facts = [q for q in questions if q.task != "sum"] * recipe.fact_repeats
    return [row(q, None) for q in facts + [q for q in questions if q.task == "sum"]]


def _mixture(rng: random.Random, world: World, count: int, image_dir: Path, recipe: Recipe) -> list[Example]:
    language = round(count * recipe.language_share)
    examples = vision_rows(rng, count - language, image_dir, "vision") + language_rows(
        rng, world, language, image_dir, "language", recipe.language_with_image, recipe.label_noise
    )
    rng.shuffle(examples)
    return examples


def write_fixed_data(world: World, recipe: Recipe, seed: int, root: Path) -> dict[str, Path]:
    """The data stages 1-2 and every measurement use: stage 2's pictures, the test sets, the monitor's set."""
    images = root / "images"
    held_out = world.questions("test")
    monitor = random.Random(f"monitor-{seed}").sample(held_out, min(recipe.monitor_rows, len(held_out)))
    stage2 = vision_rows(
        random.Random(f"stage2-{seed}"), recipe.stage2_steps * recipe.batch_size, images / "stage2", "v"
    )
    vision_test = vision_rows(random.Random(f"test-{seed}"), recipe.vision_test_rows, images / "test", "t")
    return {
        "stage2": write_jsonl(root / "stage2.jsonl", stage2),
        "monitor": write_jsonl(root / "monitor.jsonl", [(q, None) for q in monitor]),
        "language_test": write_jsonl(root / "language_test.jsonl", [(q, None) for q in held_out], scored=True),
        "vision_test": write_jsonl(root / "vision_test.jsonl", vision_test, scored=True),
    }


def write_recovery_data(world: World, recipe: Recipe, seed: int, root: Path) -> dict[str, Path]:
    """Stage 3's training mixture and its validation rows (the same for every recovery run of a seed)."""
    count = recipe.recovery_steps * recipe.batch_size
    train = _mixture(random.Random(f"recovery-{seed}"), world, count, root / "images" / "recovery", recipe)
    val = _mixture(random.Random(f"val-{seed}"), world, recipe.val_rows, root / "images" / "val", recipe)
    return {"recovery": write_jsonl(root / "recovery.jsonl", train), "val": write_jsonl(root / "val.jsonl", val)}


def recovery_config(run: str, recipe: Recipe, root: Path) -> Path | None:
    """The run's plugin config: the one under configs/, or a copy with the recipe's overrides for that run."""
    name = RECOVERY_RUNS[run]
    if name is None:
        return None
    path = CONFIG_DIR / name
    overrides = recipe.overrides.get(run)
    if not overrides:
        return path
    data = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        data.setdefault(section, {})[key] = value
    out = root / "configs" / f"{run}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def check_tags(config: Path, dataset: Path, uniform: bool, env: dict[str, str]) -> dict[str, int]:
    """Every recovery row is tagged as intended (selective: knowledge/text distilled, pictures not); counts."""
    from swift_lingudistill.config import load_config
    from swift_lingudistill.tagging import Tagger

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        tagger = Tagger(load_config(config).tagging)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    counts = {"distilled": 0, "not_distilled": 0}
    for index, record in enumerate(read_jsonl(dataset)):
        weight = tagger.decide(record, index).weight
        expected = 1.0 if uniform or record["category"] in DISTILLED_CATEGORIES else 0.0
        if weight != expected:
            raise AssertionError(f"{config.name} tags row {index} ({record['category']}) {weight}, expected {expected}")
        counts["distilled" if weight > 0 else "not_distilled"] += 1
    return counts


def _scores(model_dir: Path, tests: dict[str, list[dict]]) -> dict[str, dict]:
    return {name: asdict(score) for name, score in score_checkpoint(model_dir, tests).items()}


def _monitor(records: list[dict]) -> list[dict[str, float]]:
    """The monitor's lang_kl / lang_ppl at each evaluation, from swift's logging.jsonl records."""
    out = []
    for r in records:
        if "eval_lang_kl" in r:  # evaluation metrics (the step-0 point included)
            step = int(str(r.get("global_step/max_steps", "0/0")).split("/")[0])
            out.append({"step": step, "lang_kl": r["eval_lang_kl"], "lang_ppl": r["eval_lang_ppl"]})
    return out


def _brief(scores: dict[str, dict]) -> str:
    return ", ".join(f"{name} {s['accuracy']:.3f}" for name, s in scores.items())


def build_and_degrade(seed: int, recipe: Recipe, root: Path, log: Log) -> dict[str, Any]:
    """Stages 1 and 2: the original LM, the VLM built from it and its multimodal fine-tuning, all scored."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    world = make_world(seed, recipe.countries)
    lm_dir, vlm_dir = root / "original_lm", root / "vlm_init"
    _, vocab_rows = build_tokenizer(_tokenizer_texts(world), lm_dir)
    make_lm(recipe.sizes, vocab_rows, seed).config.save_pretrained(lm_dir)  # the template reads the model type
    losses = pretrain_lm(
        _lm_rows(world, recipe), load_template(lm_dir), lm_dir, recipe.sizes, vocab_rows, seed, recipe.lm
    )
    timings["lm_pretrain"] = time.perf_counter() - clock
    log(f"[seed {seed}] original LM trained ({len(losses)} steps, last loss {losses[-1]:.4f})")

    clock = time.perf_counter()
    vision_state, probe = pretrain_vision(recipe.sizes, seed, recipe.vision)
    build_vlm(lm_dir, vision_state, vlm_dir, recipe.sizes)
    timings["vision_pretrain"] = time.perf_counter() - clock
    log(f"[seed {seed}] vision tower pre-trained, probe accuracy {probe}")

    paths = write_fixed_data(world, recipe, seed, root / "data")
    tests = {"language": read_jsonl(paths["language_test"]), "vision": read_jsonl(paths["vision_test"])}
    scores = {
        "original_lm": {"language": asdict(score_checkpoint(lm_dir, {"l": tests["language"]})["l"])},
        "vlm_init": _scores(vlm_dir, tests),
    }
    stage2 = swift_sft(
        vlm_dir, paths["stage2"], root / "stage2", steps=recipe.stage2_steps, lr=recipe.stage2_lr,
        batch_size=recipe.batch_size, seed=seed,
    )  # fmt: skip
    timings["stage2"] = stage2.seconds
    scores["degraded"] = _scores(stage2.checkpoint, tests)
    log(f"[seed {seed}] stage 2 done in {stage2.seconds:.0f} s: {_brief(scores['degraded'])}")
    stages = {
        "seed": seed,
        "probe": probe,
        "scores": scores,
        "timings": timings,
        "paths": {k: str(v) for k, v in paths.items()},
        "lm_dir": str(lm_dir),
        "degraded": str(stage2.checkpoint),
    }
    (root / "stages.json").write_text(json.dumps(stages, indent=1))
    return stages


def recover(stages: dict[str, Any], recipe: Recipe, root: Path, log: Log) -> dict[str, Any]:
    """Stage 3: every recovery run from the degraded VLM, same data, steps and seed; scored and monitored."""
    seed = stages["seed"]
    world = make_world(seed, recipe.countries)
    fixed = {k: Path(v) for k, v in stages["paths"].items()}
    paths = write_recovery_data(world, recipe, seed, root / "data")
    tests = {"language": read_jsonl(fixed["language_test"]), "vision": read_jsonl(fixed["vision_test"])}
    results: dict[str, Any] = {**stages, "scores": dict(stages["scores"]), "timings": dict(stages["timings"])}
    results.update(monitor={}, tags={})
    env = {"LINGUDISTILL_TEACHER": stages["lm_dir"], "MINIATURE_MONITOR_DATASET": str(fixed["monitor"])}
    for run in recipe.runs:
        config = recovery_config(run, recipe, root)
        extra: list[str] = []
        run_env = dict(env)
        if config is not None:
            results["tags"][run] = check_tags(config, paths["recovery"], run == "uniform", env)
            run_env["LINGUDISTILL_CONFIG"] = str(config)
            extra = ["--loss_type", "lingudistill", "--callbacks", "lingudistill_monitor"]
            extra += ["--val_dataset", str(paths["val"]), "--eval_strategy", "steps"]
            extra += ["--eval_steps", str(recipe.eval_steps), "--eval_on_start", "true"]
        result = swift_sft(
            Path(stages["degraded"]), paths["recovery"], root / run, steps=recipe.recovery_steps, lr=recipe.recovery_lr,
            batch_size=recipe.batch_size, seed=seed, extra=tuple(extra), env=run_env,
        )  # fmt: skip
        results["timings"][run] = result.seconds
        results["scores"][run] = _scores(result.checkpoint, tests)
        results["monitor"][run] = _monitor(result.records)
        log(f"[seed {seed}] ({run}) done in {result.seconds:.0f} s: {_brief(results['scores'][run])}")
    (root / "results.json").write_text(json.dumps(results, indent=1))
    return results


def run_seed(seed: int, recipe: Recipe, root: Path, log: Log = print, reuse: Path | None = None) -> dict[str, Any]:
    """Every stage for ``seed`` under ``root``; with ``reuse`` (a seed folder of an earlier run with the same
    stages 1-2 recipe) only the recovery runs are trained again. Returns the scores, monitor curves and timings."""
    root.mkdir(parents=True, exist_ok=True)
    if reuse is not None:
        stages = json.loads((reuse / "stages.json").read_text())
        log(f"[seed {seed}] reusing stages 1-2 from {reuse}")
    else:
        stages = build_and_degrade(seed, recipe, root, log)
    return recover(stages, recipe, root, log)
