"""The table over seeds (mean, std, min-max) and the monitor's curves, from each seed's ``results.json``."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

__all__ = ["LABELS", "format_table", "plot_monitor", "summarise"]

# row key -> label in the table
LABELS = {
    "original_lm": "Original LM (text-only teacher)",
    "vlm_init": "VLM as built (LM + pre-trained vision tower)",
    "degraded": "Degraded VLM (after multimodal fine-tuning)",
    "plain": "(a) plain `swift sft`",
    "plain_monitor": "(a') plain as LinguDistill, lambda 0 (monitor)",
    "uniform": "(b) uniform LinguDistill",
    "selective": "(c) selective LinguDistill",
}


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """model -> test set -> stats of the accuracy over seeds (plus the monitor's last lang_kl per run)."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for key in LABELS:
        per_set: dict[str, list[float]] = {}
        for result in results:
            for name, score in result["scores"].get(key, {}).items():
                per_set.setdefault(name, []).append(score["accuracy"])
            curve = result["monitor"].get(key)
            if curve:
                per_set.setdefault("lang_kl", []).append(curve[-1]["lang_kl"])
        if per_set:
            summary[key] = {name: _stats(values) for name, values in per_set.items()}
    return summary


def _cell(stats: dict[str, float] | None, percent: bool = True) -> str:
    """'mean ± std [min–max]': accuracies in percent with one decimal, divergences with three."""
    if stats is None:
        return "n/a"
    scale, digits = (100, 1) if percent else (1, 3)
    m, s, lo, hi = (stats[k] * scale for k in ("mean", "std", "min", "max"))
    return f"{m:.{digits}f} ± {s:.{digits}f} [{lo:.{digits}f}–{hi:.{digits}f}]"


def format_table(summary: dict[str, dict[str, dict[str, float]]], seeds: list[int]) -> str:
    """Markdown: language and vision accuracy (%) as mean ± std [min–max] over the seeds, lang_kl at the end."""
    lines = [
        f"| model (seeds {', '.join(map(str, seeds))}) | language accuracy, held-out phrasings (%) "
        "| vision accuracy (%) | lang_kl at the end (nats/token) |",
        "|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        row = summary.get(key)
        if row is None:
            continue
        kl = row.get("lang_kl")
        lines.append(
            f"| {label} | {_cell(row.get('language'))} | {_cell(row.get('vision'))} | "
            f"{_cell(kl, percent=False) if kl else 'n/a'} |"
        )
    return "\n".join(lines)


def per_task_table(results: list[dict[str, Any]]) -> str:
    """Markdown: mean accuracy (%) per task over the seeds, for every model."""
    tasks: dict[str, list[str]] = {}
    for result in results:
        for scores in result["scores"].values():
            for name, score in scores.items():
                tasks.setdefault(name, [])
                tasks[name] = sorted(set(tasks[name]) | set(score["by_task"]))
    columns = [(name, task) for name in ("language", "vision") for task in tasks.get(name, [])]
    lines = ["| model | " + " | ".join(f"{task}" for _, task in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, label in LABELS.items():
        cells = []
        for name, task in columns:
            values = [r["scores"][key][name]["by_task"][task] for r in results if name in r["scores"].get(key, {})]
            cells.append(f"{100 * statistics.fmean(values):.0f}" if values else "n/a")
        if any(c != "n/a" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_monitor(results: list[dict[str, Any]], path: Path) -> Path | None:
    """lang_kl and lang_ppl over the recovery steps for every monitored run: mean over seeds, min-max band."""
    runs = [run for run in LABELS if any(r["monitor"].get(run) for r in results)]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, key, title in zip(
        axes, ("lang_kl", "lang_ppl"), ("KL(teacher || student)", "student perplexity"), strict=True
    ):
        for run in runs:
            curves = [r["monitor"][run] for r in results if r["monitor"].get(run)]
            steps = [point["step"] for point in curves[0]]
            values = [[c[i][key] for c in curves] for i in range(len(steps))]
            axis.plot(steps, [statistics.fmean(v) for v in values], marker="o", label=LABELS[run])
            axis.fill_between(steps, [min(v) for v in values], [max(v) for v in values], alpha=0.2)
        axis.set_xlabel("recovery step")
        axis.set_title(f"{key}: {title}", fontsize=10)
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"held-out text-only set, mean over {len(results)} seeds (band: min-max)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
