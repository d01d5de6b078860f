"""The language-retention monitor's picture: did the student's language survive the fine-tuning?

Two panels over the training steps, both measured on the same held-out text-only rows: the student's perplexity
(log scale) next to the teacher's own as a reference line (the level the text LM it was built from reaches), and
the KL from the teacher to the student (0 = the teacher's distribution exactly). Plain matplotlib, no swift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LanguagePoint", "language_figure", "plot_language"]

# One measurement: {"step": int, "lang_ppl": float, "lang_kl": float}
LanguagePoint = dict


def _headline(history: Sequence[LanguagePoint], teacher_ppl: float | None) -> str:
    """Two lines of numbers: the student's perplexity and KL at the first and last step, against the teacher's."""
    first, last = history[0], history[-1]
    ppl = f"perplexity: student {first['lang_ppl']:.4g} (step {first['step']})"
    ppl += f" -> {last['lang_ppl']:.4g} (step {last['step']})"
    if teacher_ppl is not None:
        ppl += f", teacher {teacher_ppl:.4g}"
        if teacher_ppl <= last["lang_ppl"] <= first["lang_ppl"] and first["lang_ppl"] > teacher_ppl:
            # how much of the distance to the teacher (on the plot's log scale) was made up
            closed = 1 - math.log(last["lang_ppl"] / teacher_ppl) / math.log(first["lang_ppl"] / teacher_ppl)
            ppl += f": {closed:.0%} of the gap closed"
        elif last["lang_ppl"] < teacher_ppl:
            ppl += ": the student is now below the teacher"
    return f"{ppl}\nKL(teacher || student): {first['lang_kl']:.3g} -> {last['lang_kl']:.3g} nats per token"


def language_figure(
    history: Sequence[LanguagePoint],
    teacher_ppl: float | None = None,
    rows: int | None = None,
    tokens: int | None = None,
):
    """The two-panel matplotlib figure. ``history`` holds at least one point; ``rows`` / ``tokens`` describe the
    held-out set in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = sorted(history, key=lambda h: h["step"])
    steps = [h["step"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))

    left.plot(steps, [h["lang_ppl"] for h in history], marker="o", color="tab:blue", label="student (the VLM)")
    if teacher_ppl is not None:
        left.axhline(teacher_ppl, color="tab:green", linestyle="--", label=f"teacher (text LM): {teacher_ppl:.4g}")
    left.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    for axis in (left.yaxis,):  # plain numbers (2, 3, 4 or 125000), not 2x10^0, on the major and minor ticks
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    left.set_ylabel("perplexity (log scale)")
    left.set_title("lang_ppl = exp(mean CE per answer token)", fontsize=10)
    left.legend(fontsize=8, loc="best")

    right.plot(steps, [h["lang_kl"] for h in history], marker="o", color="tab:red", label="KL(teacher || student)")
    right.axhline(0.0, color="tab:green", linestyle="--", label="0: the teacher's distribution")
    right.set_ylim(bottom=min(0.0, min(h["lang_kl"] for h in history)))
    right.set_ylabel("KL divergence (nats per token)")
    right.set_title("lang_kl: distance from the teacher's next-token distribution", fontsize=10)
    right.legend(fontsize=8, loc="best")

    for axis in (left, right):
        axis.set_xlabel("training step")
        axis.grid(alpha=0.3, which="both")
    size = f" ({rows} rows, {tokens} answer tokens)" if rows and tokens else ""
    figure.suptitle(f"Did the language survive? Measured on the held-out text-only set{size}", fontsize=12)
    figure.text(0.5, 0.905, _headline(history, teacher_ppl), ha="center", va="top", fontsize=9.5)
    figure.tight_layout(rect=(0, 0, 1, 0.84))
    return figure


def plot_language(history: Sequence[LanguagePoint], path: str | Path, **kwargs) -> Path:
    """Write ``language_figure(history, **kwargs)`` as a PNG to ``path`` and return the path."""
    import matplotlib.pyplot as plt

    figure = language_figure(history, **kwargs)
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
