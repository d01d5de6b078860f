"""The miniature reproduction of LinguDistill's trade-off, one command, CPU only.

    .venv/bin/python examples/miniature/run.py --seeds 0 1 2

Builds everything under output/miniature/ (git-ignored), runs every stage for each seed and prints the table
(also written to output/miniature/table.md with the per-task table, the monitor plot and all results).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Before torch is imported: one thread per process (see minirepro.swift_cli.OFFLINE_ENV).
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from minirepro.swift_cli import OFFLINE_ENV  # noqa: E402

for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)


def _parse_override(text: str) -> tuple[str, str, object]:
    """'selective:loss.lambda=2' -> ('selective', 'loss.lambda', 2.0)."""
    import yaml

    run, _, assignment = text.partition(":")
    key, _, value = assignment.partition("=")
    if not run or "." not in key or not value:
        raise argparse.ArgumentTypeError(f"expected RUN:SECTION.KEY=VALUE (e.g. selective:loss.lambda=2), got {text!r}")
    return run, key, yaml.safe_load(value)


def _log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel (one CPU core each)")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="an earlier run's output folder: reuse its stages 1-2 (recoveries only)",
    )
    parser.add_argument("--out", type=Path, default=HERE.parents[1] / "output" / "miniature")
    parser.add_argument(
        "--runs", nargs="+", default=None, help="recovery runs (default: plain plain_monitor uniform selective)"
    )
    parser.add_argument("--override", type=_parse_override, action="append", default=[],
                        help="change one run's plugin config, e.g. selective:loss.lambda=2 (repeatable)")  # fmt: skip
    parser.add_argument("--set", dest="recipe", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a recipe field, e.g. recovery_steps=400 (repeatable)")  # fmt: skip
    ns = parser.parse_args(argv)

    import yaml
    from minirepro.pipeline import Recipe, run_seed
    from minirepro.report import format_table, per_task_table, plot_monitor, summarise

    changes: dict[str, object] = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in ns.recipe)}
    if ns.runs:
        changes["runs"] = tuple(ns.runs)
    overrides: dict[str, dict[str, object]] = {}
    for run, key, value in ns.override:
        overrides.setdefault(run, {})[key] = value
    recipe = Recipe(**changes, overrides=overrides)

    def reused(seed: int) -> Path | None:
        return None if ns.reuse is None else ns.reuse / f"seed{seed}"

    start = time.perf_counter()
    if ns.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=ns.jobs, mp_context=context) as pool:
            futures = [
                pool.submit(run_seed, seed, recipe, ns.out / f"seed{seed}", _log, reused(seed)) for seed in ns.seeds
            ]
            results = [future.result() for future in futures]
    else:
        results = [run_seed(seed, recipe, ns.out / f"seed{seed}", _log, reused(seed)) for seed in ns.seeds]
    wall = time.perf_counter() - start

    table = format_table(summarise(results), ns.seeds)
    tasks = per_task_table(results)
    plot = plot_monitor(results, ns.out / "monitor.png")
    timing = {k: sum(r["timings"][k] for r in results) / len(results) for k in results[0]["timings"]}
    text = (
        f"{table}\n\nPer task (mean % over seeds):\n\n{tasks}\n\nWall time: {wall / 60:.1f} min for "
        f"{len(ns.seeds)} seed(s); mean seconds per seed and stage: "
        + ", ".join(f"{k} {v:.0f}" for k, v in timing.items())
        + (f"\nMonitor plot: {plot}" if plot else "")
    )
    print("\n" + text)
    (ns.out / "table.md").write_text(text + "\n", encoding="utf-8")
    (ns.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
