"""Statistics of an ablation study: seeds → mean ± CI, paired tests against the full model.

- `summarise(values)`: mean, sample standard deviation and the two-sided t-based confidence
  interval `mean ± t_{(1+c)/2, n-1} · s / √n` (scipy's Student t).
- `compare(variant, reference)`: runs are paired by seed (the same stage-1 encoder, the same
  split). The difference `variant − reference` gets its own t interval; the paired t-test gives
  the exact two-sided p-value (`scipy.stats.ttest_rel`), and the Wilcoxon signed-rank test
  (`scipy.stats.wilcoxon`, exact distribution) is run when the number of pairs can reach
  p < 0.05 at all: with n pairs its smallest two-sided p is 2 / 2ⁿ, so it needs n ≥ 6.
- `holm(pvalues)`: Holm's step-down adjustment across the variants of one study (one split, one
  metric), which controls the family-wise error rate without assuming independence.

Too few seeds are said plainly in `Comparison.note`, never hidden behind a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

WILCOXON_MIN_PAIRS = 6
"""With n pairs the exact two-sided Wilcoxon p-value is at least 2 / 2ⁿ: n = 5 gives 0.0625."""


@dataclass(frozen=True)
class Summary:
    """A metric over the seeds of one variant."""

    n: int
    mean: float
    std: float
    """Sample standard deviation (ddof = 1); nan for one value."""
    ci_low: float
    ci_high: float
    """The t-based confidence interval; nan when n < 2."""

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


@dataclass(frozen=True)
class Comparison:
    """A variant against the full model on one metric, paired by seed."""

    n: int
    """Seeds where both runs finished."""
    difference: Summary
    """variant − full over the paired seeds."""
    t_statistic: float
    p_t: float
    """Two-sided paired t-test (exact, Student t with n − 1 degrees of freedom); nan if n < 2."""
    p_wilcoxon: float
    """Two-sided exact Wilcoxon signed-rank p-value; nan when n < WILCOXON_MIN_PAIRS."""
    p_holm: float = math.nan
    """`p_t` after Holm's correction across the variants of the study."""
    note: str = ""
    """Plain words when the seeds are too few for a test to mean much."""


def summarise(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean ± t-based confidence interval of `values` (nan-free)."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(data.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def compare(
    variant: dict[int, float], reference: dict[int, float], confidence: float = 0.95
) -> Comparison:
    """Paired comparison of `variant` against `reference` (seed → value)."""
    seeds = sorted(set(variant) & set(reference))
    a = np.array([variant[s] for s in seeds], dtype=float)
    b = np.array([reference[s] for s in seeds], dtype=float)
    n = len(seeds)
    difference = summarise(a - b, confidence)
    t_statistic = p_t = p_wilcoxon = math.nan
    notes = []
    if n < 2:
        notes.append(f"{n} paired seed{'s' if n != 1 else ''}: no interval and no test possible")
    else:
        if np.allclose(a - b, (a - b)[0]):
            # Identical differences: zero variance, the t statistic is undefined.
            notes.append("the difference is the same for every seed: no t-test")
        else:
            result = stats.ttest_rel(a, b)
            t_statistic, p_t = float(result.statistic), float(result.pvalue)
        if n < 3:
            notes.append("2 seeds: the t-test has 1 degree of freedom, indicative only")
        if n >= WILCOXON_MIN_PAIRS:
            if np.any(a - b != 0):
                p_wilcoxon = float(stats.wilcoxon(a, b, method="exact").pvalue)
        else:
            notes.append(
                f"Wilcoxon needs >= {WILCOXON_MIN_PAIRS} seeds (smallest p with {n} is "
                f"{2 / 2**n:.3g})"
            )
    return Comparison(
        n=n,
        difference=difference,
        t_statistic=t_statistic,
        p_t=p_t,
        p_wilcoxon=p_wilcoxon,
        note="; ".join(notes),
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (nan entries stay nan and do not count in the family)."""
    indexed = [(p, i) for i, p in enumerate(pvalues) if not math.isnan(p)]
    indexed.sort()
    m = len(indexed)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, index) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted
