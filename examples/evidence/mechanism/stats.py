"""Paired statistics over units (a unit = one model build x one data order; every arm of a unit shares both).

- paired mean difference with a 95 % CI from the t distribution (n - 1 degrees of freedom);
- the same mean with a 95 % percentile bootstrap that resamples whole builds (the two orders of a build share
  its models, so they are not independent; with 4 builds this interval is coarse, and it is reported beside t);
- per-item McNemar counts (items right in one arm and wrong in the other), pooled over units, exact binomial p;
- Holm's step-down correction over a family of secondary comparisons.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy import stats as _scipy

__all__ = ["Paired", "holm", "mcnemar", "paired"]


@dataclass(frozen=True)
class Paired:
    """A paired comparison in accuracy points (x 100)."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    p: float
    boot_low: float
    boot_high: float
    min: float
    max: float
    positive: int  # units with a difference > 0

    def as_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def paired(diffs: Sequence[float], clusters: Sequence[int], boot: int = 10_000, seed: int = 0) -> Paired:
    """``diffs`` per unit (points); ``clusters`` the build of each unit (for the clustered bootstrap)."""
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else float("nan")
    se = sd / math.sqrt(n)
    if se > 0:
        half = float(_scipy.t.ppf(0.975, n - 1)) * se
        p = float(2 * _scipy.t.sf(abs(mean) / se, n - 1))
    else:  # every unit gave the same difference
        half, p = 0.0, (1.0 if mean == 0 else 0.0)
    by_cluster: dict[int, list[float]] = {}
    for d, c in zip(diffs, clusters, strict=True):
        by_cluster.setdefault(c, []).append(d)
    groups = list(by_cluster.values())
    rng = random.Random(seed)
    means = []
    for _ in range(boot):
        picked = [d for _ in groups for d in rng.choice(groups)]
        means.append(sum(picked) / len(picked))
    means.sort()
    low, high = means[int(0.025 * boot)], means[int(0.975 * boot) - 1]
    return Paired(
        n, mean, sd, mean - half, mean + half, p, low, high, min(diffs), max(diffs), sum(d > 0 for d in diffs)
    )


def mcnemar(first: Sequence[bool], second: Sequence[bool]) -> dict[str, float]:
    """Items right in ``first`` only (b) and in ``second`` only (c); exact two-sided binomial p for b vs c."""
    b = sum(1 for x, y in zip(first, second, strict=True) if x and not y)
    c = sum(1 for x, y in zip(first, second, strict=True) if y and not x)
    p = float(_scipy.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"first_only": b, "second_only": c, "p": round(p, 6)}


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (family-wise error), same keys."""
    ordered = sorted(pvalues.items(), key=lambda kv: kv[1])
    m = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[name] = running
    return adjusted
