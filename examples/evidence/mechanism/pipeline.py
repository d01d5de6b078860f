"""The whole experiment: builds in parallel worker processes, every arm of every unit, one JSON of results.

A worker takes one build (seed) at a time: stages 1-4, the gate, then for each data order every arm. Results
are numbers only (accuracies, per-item correctness as 0/1 strings, per-step losses); no weights are kept.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

__all__ = ["Plan", "run_build", "run_plan"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What to run: builds (seeds), data orders, arms, and the recipes."""

    builds: tuple[int, ...]
    orders: tuple[int, ...] = (0, 1)
    arms: tuple[str, ...] = ()
    build_recipe: Any = None  # BuildRecipe (default when None)
    recovery: Any = None  # RecoveryRecipe (default when None)
    label: str = "table"
    extra: dict[str, Any] = field(default_factory=dict)


def _log(message: str) -> None:
    print(message, flush=True)


def _compact(scores: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "accuracy": round(s.accuracy, 6),
            "by_task": {k: round(v, 6) for k, v in s.by_task().items()},
            "correct": "".join("1" if ok else "0" for ok in s.correct),
        }
        for name, s in scores.items()
    }


def run_build(seed: int, plan: Plan, out_dir: Path, log: Log = _log) -> dict[str, Any]:
    """Stages 1-4 and the gate for build ``seed``, then every arm of its units; returns (and writes) results."""
    import torch

    from . import plugin_api as plugin
    from .arms import ARMS
    from .build import BuildRecipe, build_models
    from .gate import measure_gate
    from .recovery import RecoveryRecipe, recovery_rows, run_arm, unit_batches

    torch.set_num_threads(1)
    recipe = plan.build_recipe or BuildRecipe()
    recovery = plan.recovery or RecoveryRecipe()
    clock = time.perf_counter()
    build = build_models(seed, recipe, out_dir / f"build_{seed}", log)
    gate = measure_gate(build)
    ik = gate["image_knowledge"]
    log(f"[build {seed}] GATE on image+knowledge rows: teacher reading the student's image K/V "
        f"{ik['teacher_reads_image_kv']['accuracy']:.3f}, image masked {ik['teacher_blind']['accuracy']:.3f} "
        f"(+{100 * gate['gain']:.1f} points); the degraded student {ik['student']['accuracy']:.3f}")  # fmt: skip
    encoded = build.encoder.encode(recovery_rows(build, recovery))
    tags = {}
    for name in ("selective", "uniform"):
        weight = plugin.tag_weight(plugin.make_config(plugin.shipped_config(name)))
        decided = [weight(e.row) for e in encoded]
        tags[name] = {"distilled": sum(w > 0 for w in decided), "not_distilled": sum(w == 0 for w in decided)}
    kinds: dict[str, int] = {}
    for e in encoded:
        kinds[e.sample.question.task] = kinds.get(e.sample.question.task, 0) + 1
    units = []
    for order in plan.orders:
        arms = {}
        for name in plan.arms or tuple(ARMS):
            arm = ARMS[name]
            batches = unit_batches(encoded, build, order + arm.order_offset, recovery.batch_size)
            result = run_arm(build, arm, batches, recovery, unit=f"{seed}-{order}")
            arms[name] = {
                "scores": _compact(result["scores"]),
                "log": [
                    {k: (round(v, 5) if v is not None else None) for k, v in step.items()} for step in result["log"]
                ],
                "seconds": round(result["train_seconds"], 2),
            }
            brief = ", ".join(f"{n} {s['accuracy']:.3f}" for n, s in arms[name]["scores"].items())
            log(f"[build {seed} order {order}] {name}: {brief} ({result['train_seconds']:.0f} s)")
        units.append({"build": seed, "order": order, "arms": arms})
    results = {
        "build": {
            "seed": seed,
            "scores": build.scores,
            "gate": gate,
            "tags": tags,
            "recovery_rows": kinds,
            "timings": {
                **{k: round(v, 1) for k, v in build.timings.items()},
                "total": round(time.perf_counter() - clock, 1),
            },
            "eval_items": {
                name: [q for b in s.batches for q in (e.sample.question.item for e in b.rows)]
                for name, s in build.evals.items()
            },
        },
        "units": units,
    }
    (out_dir / f"build_{seed}.json").write_text(json.dumps(results))
    return results


def _worker(seed: int, plan: Plan, out_dir: str) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run_build(seed, plan, Path(out_dir))


def run_plan(plan: Plan, out_dir: Path, jobs: int = 2, log: Log = _log) -> dict[str, Any]:
    """Every build of ``plan`` (``jobs`` worker processes), gathered into one results dict (also written)."""
    from .build import BuildRecipe
    from .recovery import RecoveryRecipe

    out_dir.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    if jobs <= 1:
        per_build = [run_build(seed, plan, out_dir, log) for seed in plan.builds]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_worker, seed, plan, str(out_dir)) for seed in plan.builds]
            per_build = [f.result() for f in futures]
    wall = time.perf_counter() - clock
    recipes = {
        "build": asdict(plan.build_recipe or BuildRecipe()),
        "recovery": asdict(plan.recovery or RecoveryRecipe()),
    }
    results = {
        "label": plan.label,
        "plan": {"builds": list(plan.builds), "orders": list(plan.orders), "arms": list(plan.arms), **plan.extra},
        "recipes": recipes,
        "wall_seconds": round(wall, 1),
        "builds": [r["build"] for r in per_build],
        "units": [u for r in per_build for u in r["units"]],
    }
    (out_dir / "results_full.json").write_text(json.dumps(results))
    log(f"== {len(results['units'])} units in {wall:.0f} s wall ({jobs} workers)")
    return results
