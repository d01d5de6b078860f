"""From the results to the statistics (``analyse``), then to the tables and the plot (``write_report``).

The pre-registered primary comparison (README): A2 - A0 on ``held_out_facts``, paired over units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .stats import holm, mcnemar, paired

__all__ = ["EVALS", "PRIMARY", "SECONDARY", "analyse", "write_report"]

EVALS = ("held_out_facts", "seen_facts", "several_answer", "image_knowledge", "vision")
EVAL_TITLES = {
    "held_out_facts": "held-out facts (primary)",
    "seen_facts": "facts in the recovery data",
    "several_answer": "several-answer coverage",
    "image_knowledge": "image + knowledge",
    "vision": "vision",
}
PRIMARY = ("A2", "A0", "held_out_facts")
SECONDARY = (
    ("A2", "A0", "seen_facts"),
    ("A2", "A0", "several_answer"),
    ("A2", "A0", "image_knowledge"),
    ("A2", "A0", "vision"),
    ("A2", "A1", "held_out_facts"),
    ("A2", "A3", "held_out_facts"),
    ("A2", "A4", "held_out_facts"),
    ("A2", "A5", "held_out_facts"),
    ("A2@T2", "A5@T2", "held_out_facts"),
    ("A2", "A3", "image_knowledge"),
    ("A6", "A2", "vision"),
)
NOISE = ("A0'", "A0")
DETECTABLE = 3.0  # points: below this upper CI bound the README says "no detectable effect at this size"


def _name(first: str, second: str, eval_name: str) -> str:
    return f"{first} - {second} | {eval_name}"


def _acc(unit: dict, arm: str, eval_name: str) -> float:
    return unit["arms"][arm]["scores"][eval_name]["accuracy"]


def _compare(units: list[dict], first: str, second: str, eval_name: str) -> dict[str, Any] | None:
    rows = [u for u in units if first in u["arms"] and second in u["arms"]]
    if len(rows) < 2:
        return None
    diffs = [100 * (_acc(u, first, eval_name) - _acc(u, second, eval_name)) for u in rows]
    result = paired(diffs, [u["build"] for u in rows]).as_dict()
    a = [c == "1" for u in rows for c in u["arms"][first]["scores"][eval_name]["correct"]]
    b = [c == "1" for u in rows for c in u["arms"][second]["scores"][eval_name]["correct"]]
    result["mcnemar"] = mcnemar(a, b)
    result["per_unit"] = [round(d, 3) for d in diffs]
    return result


def analyse(results: dict[str, Any]) -> dict[str, Any]:
    """Every statistic the README reports, numbers only (committed as the results file)."""
    units = results["units"]
    arms = [a for a in results["plan"]["arms"] if all(a in u["arms"] for u in units)] or list(units[0]["arms"])
    clusters = [u["build"] for u in units]
    table: dict[str, dict[str, Any]] = {}
    for arm in arms:
        table[arm] = {}
        for ev in EVALS:
            values = [100 * u["arms"][arm]["scores"][ev]["accuracy"] for u in units]
            stat = paired(values, clusters, boot=2000)
            table[arm][ev] = {
                "mean": round(stat.mean, 3),
                "ci": [round(stat.ci_low, 3), round(stat.ci_high, 3)],
                "per_unit": [round(v, 3) for v in values],
            }
    summary: dict[str, Any] = {
        "label": results.get("label"),
        "units": [[u["build"], u["order"]] for u in units],
        "wall_seconds": results.get("wall_seconds"),
        "gate": {},
        "degradation": {},
        "tags": {},
        "arms": table,
    }
    for b in results["builds"]:
        gate = b["gate"]["image_knowledge"]
        summary["gate"][str(b["seed"])] = {
            "teacher_reads_image_kv": round(100 * gate["teacher_reads_image_kv"]["accuracy"], 2),
            "teacher_blind": round(100 * gate["teacher_blind"]["accuracy"], 2),
            "student": round(100 * gate["student"]["accuracy"], 2),
            "gain": round(100 * b["gate"]["gain"], 2),
            "teacher_on_vision_rows": round(100 * b["gate"]["vision"]["teacher_reads_image_kv"]["accuracy"], 2),
            "student_on_vision_rows": round(100 * b["gate"]["vision"]["student"]["accuracy"], 2),
        }
        scores = b["scores"]
        summary["degradation"][str(b["seed"])] = {
            stage: {ev: round(100 * scores[stage][ev]["accuracy"], 2) for ev in EVALS if ev in scores[stage]}
            for stage in ("original_lm", "aligned", "degraded")
        }
        summary["tags"][str(b["seed"])] = b["tags"]
    gains = [g["gain"] for g in summary["gate"].values()]
    summary["gate_mean_gain"] = round(sum(gains) / len(gains), 2)
    primary = _compare(units, *PRIMARY)
    summary["primary"] = {"comparison": _name(*PRIMARY), **(primary or {})}
    if primary:
        summary["primary"]["detectable"] = primary["ci_high"] >= DETECTABLE
    secondary = {_name(*c): _compare(units, *c) for c in SECONDARY}
    secondary = {k: v for k, v in secondary.items() if v is not None}
    adjusted = holm({k: v["p"] for k, v in secondary.items()})
    for k, v in secondary.items():
        v["p_holm"] = round(adjusted[k], 6)
    summary["secondary"] = secondary
    summary["noise_floor"] = {ev: _compare(units, *NOISE, ev) for ev in EVALS}
    summary["by_task"] = {
        arm: {
            ev: {
                task: round(100 * sum(u["arms"][arm]["scores"][ev]["by_task"][task] for u in units) / len(units), 2)
                for task in units[0]["arms"][arm]["scores"][ev]["by_task"]
            }
            for ev in EVALS
        }
        for arm in arms
    }
    return summary


def _ci(entry: dict[str, Any]) -> str:
    return f"{entry['mean']:.1f} [{entry['ci'][0]:.1f}, {entry['ci'][1]:.1f}]"


def _diff(entry: dict[str, Any]) -> str:
    return f"{entry['mean']:+.1f} [{entry['ci_low']:+.1f}, {entry['ci_high']:+.1f}]"


def _p(value: float, below: float) -> str:
    """A stored (rounded) p-value; a stored 0 means below ``below`` (half the last rounded digit), not zero."""
    return f"< {below:.2g}" if value == 0 else f"{value:.2g}"


def tables(summary: dict[str, Any]) -> str:
    """The markdown tables of the README, from a summary."""
    lines: list[str] = []
    arms = list(summary["arms"])
    n = len(summary["units"])
    lines += ["**Gate** (before any arm; image+knowledge rows on held-out pictures, accuracy %):", ""]
    lines += [
        "| build | teacher reads the student's image K/V | teacher, image masked (scope none) | gain "
        "| degraded student | teacher on vision rows | student on vision rows |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, g in summary["gate"].items():
        lines.append(
            f"| {seed} | {g['teacher_reads_image_kv']:.1f} | {g['teacher_blind']:.1f} | {g['gain']:+.1f} | "
            f"{g['student']:.1f} | {g['teacher_on_vision_rows']:.1f} | {g['student_on_vision_rows']:.1f} |"
        )
    lines += ["", "**Forgetting** (accuracy %, original LM -> aligned VLM -> degraded VLM):", ""]
    lines += [
        "| build | held-out facts | facts in the recovery data | image + knowledge | vision |",
        "|---|---|---|---|---|",
    ]
    for seed, d in summary["degradation"].items():
        o, a, g = d["original_lm"], d["aligned"], d["degraded"]
        lines.append(
            f"| {seed} | {o['held_out_facts']:.1f} -> {a['held_out_facts']:.1f} -> {g['held_out_facts']:.1f} | "
            f"{o['seen_facts']:.1f} -> {a['seen_facts']:.1f} -> {g['seen_facts']:.1f} | "
            f"{a['image_knowledge']:.1f} -> {g['image_knowledge']:.1f} | {a['vision']:.1f} -> {g['vision']:.1f} |"
        )
    lines += ["", f"**Accuracy per arm** (%, mean over {n} units [95 % t interval]):", ""]
    lines += ["| arm | " + " | ".join(EVAL_TITLES[e] for e in EVALS) + " |", "|---" * (len(EVALS) + 1) + "|"]
    for arm in arms:
        lines.append(f"| {arm} | " + " | ".join(_ci(summary["arms"][arm][e]) for e in EVALS) + " |")
    p = summary["primary"]
    if "mean" in p:
        mc = p["mcnemar"]
        lines += ["", "**Primary (pre-registered): A2 - A0 on held-out facts**, points, paired over units:", ""]
        lines += [
            "| mean | 95 % CI (paired t) | 95 % CI (bootstrap over builds) | units > 0 "
            "| McNemar: A2 only / A0 only (exact p) |",
            "|---|---|---|---|---|",
            f"| {p['mean']:+.2f} | [{p['ci_low']:+.2f}, {p['ci_high']:+.2f}] "
            f"| [{p['boot_low']:+.2f}, {p['boot_high']:+.2f}] | {p['positive']} of {p['n']} "
            f"| {mc['first_only']} / {mc['second_only']} (p {'' if mc['p'] == 0 else '= '}{_p(mc['p'], 5e-7)}) |",
        ]
    lines += ["", "**Secondary comparisons** (points; Holm-adjusted p over this family, from the paired t):", ""]
    lines += [
        "| comparison | mean [95 % CI] | units > 0 | McNemar first / second | p | p (Holm) |",
        "|---|---|---|---|---|---|",
    ]
    p_below = 5e-5  # paired p is stored to 4 decimals (stats.Paired.as_dict); Holm multiplies it by at most m
    for name, s in summary["secondary"].items():
        mc = s["mcnemar"]
        label = name.replace(" | ", ", ")  # a `|` would split the markdown cell
        lines.append(f"| {label} | {_diff(s)} | {s['positive']} of {s['n']} | {mc['first_only']} / {mc['second_only']} "
                     f"| {_p(s['p'], p_below)} | {_p(s['p_holm'], p_below * len(summary['secondary']))} |")  # fmt: skip
    lines += ["", "**Noise floor**: A0' (A0 on another order of the same rows) - A0, points:", ""]
    lines += ["| evaluation | mean [95 % CI] | largest absolute difference of a unit |", "|---|---|---|"]
    for ev, s in summary["noise_floor"].items():
        if s:
            lines.append(f"| {EVAL_TITLES[ev]} | {_diff(s)} | {max(abs(s['min']), abs(s['max'])):.1f} |")
    lines += ["", "**Per unit**, held-out facts (%):", ""]
    lines += ["| build, order | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for i, (seed, order) in enumerate(summary["units"]):
        row = " | ".join(f"{summary['arms'][a]['held_out_facts']['per_unit'][i]:.1f}" for a in arms)
        lines.append(f"| {seed}, {order} | {row} |")
    lines += ["", "**Per task** (%, mean over units):", ""]
    tasks = [(ev, t) for ev in EVALS for t in summary["by_task"][arms[0]][ev]]
    short = {
        "held_out_facts": "held-out",
        "seen_facts": "seen",
        "several_answer": "",
        "image_knowledge": "",
        "vision": "",
    }
    heads = [f"{short[ev]} {t}".strip() for ev, t in tasks]
    lines += ["| arm | " + " | ".join(heads) + " |", "|---" * (len(tasks) + 1) + "|"]
    for arm in arms:
        lines.append(f"| {arm} | " + " | ".join(f"{summary['by_task'][arm][ev][t]:.0f}" for ev, t in tasks) + " |")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Three panels of accuracy per arm (mean, 95 % CI, every unit) and the paired differences from A0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary["arms"])
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.6))
    for ax, ev in zip(axes[:3], ("held_out_facts", "image_knowledge", "vision"), strict=True):
        for i, arm in enumerate(arms):
            e = summary["arms"][arm][ev]
            ax.errorbar(
                i, e["mean"], yerr=[[e["mean"] - e["ci"][0]], [e["ci"][1] - e["mean"]]], fmt="o", color="C0", capsize=3
            )
            ax.scatter([i + 0.15] * len(e["per_unit"]), e["per_unit"], s=8, color="0.6")
        ax.set_xticks(range(len(arms)), arms, rotation=45)
        ax.set_title(EVAL_TITLES[ev])
        ax.set_ylabel("accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    ax = axes[3]
    others = [a for a in arms if a != "A0"]
    units = summary["units"]
    for i, arm in enumerate(others):
        ours, base = (
            summary["arms"][arm]["held_out_facts"]["per_unit"],
            summary["arms"]["A0"]["held_out_facts"]["per_unit"],
        )
        diffs = [ours[u] - base[u] for u in range(len(units))]
        mean = sum(diffs) / len(diffs)
        ax.scatter([i] * len(diffs), diffs, s=8, color="0.6")
        ax.scatter([i], [mean], color="C3", zorder=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(others)), others, rotation=45)
    ax.set_title("held-out facts: arm - A0 per unit (points)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], summary: dict[str, Any], out_dir: Path) -> str:
    """table.md, summary.json and plot.png under ``out_dir``; returns the tables' text."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    text = tables(summary)
    (out_dir / "table.md").write_text(text + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary, out_dir / "plot.png")
    return text
