"""The statistics against values computed by hand (closed forms, not scipy)."""

from __future__ import annotations

import math

import pytest

from ablations.stats import compare, holm, summarise


def t_quantile_df2(p: float) -> float:
    """Student t quantile with 2 degrees of freedom: (2p − 1) / √(2p(1 − p))."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def t_two_sided_p_df2(t: float) -> float:
    """Two-sided p of Student t with 2 degrees of freedom: 1 − |t| / √(2 + t²)."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


def test_mean_and_t_interval_by_hand():
    summary = summarise([0.5, 0.6, 0.7])
    assert summary.n == 3
    assert summary.mean == pytest.approx(0.6)
    assert summary.std == pytest.approx(0.1)
    half = t_quantile_df2(0.975) * 0.1 / math.sqrt(3)  # 4.3027 · 0.1 / √3 = 0.24841
    assert half == pytest.approx(0.24841, abs=1e-5)
    assert (summary.ci_low, summary.ci_high) == pytest.approx((0.6 - half, 0.6 + half))
    ninety = summarise([0.5, 0.6, 0.7], confidence=0.90)
    assert ninety.half_width == pytest.approx(t_quantile_df2(0.95) * 0.1 / math.sqrt(3))


def test_one_value_has_no_interval():
    summary = summarise([0.4])
    assert summary.mean == 0.4 and math.isnan(summary.ci_low) and math.isnan(summary.std)
    assert summarise([]).n == 0


def test_paired_t_test_by_hand():
    # differences 0.1, 0.3, 0.2 → mean 0.2, s 0.1, t = 0.2 / (0.1 / √3) = 3.4641 with 2 df
    variant = {0: 0.6, 1: 0.8, 2: 0.7}
    full = {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.9}  # seed 3 has no pair: left out
    comparison = compare(variant, full)
    t = 0.2 / (0.1 / math.sqrt(3))
    assert comparison.n == 3
    assert comparison.difference.mean == pytest.approx(0.2)
    assert comparison.t_statistic == pytest.approx(t)
    assert comparison.p_t == pytest.approx(t_two_sided_p_df2(t))  # 0.07418
    assert comparison.p_t == pytest.approx(0.074180, abs=1e-6)
    half = t_quantile_df2(0.975) * 0.1 / math.sqrt(3)
    assert comparison.difference.ci_low == pytest.approx(0.2 - half)
    assert math.isnan(comparison.p_wilcoxon)
    assert "Wilcoxon needs >= 6 seeds" in comparison.note


def test_wilcoxon_exact_by_hand():
    # 6 pairs, all better: W− = 0, exact two-sided p = 2 · 1/2⁶ = 0.03125.
    full = {s: 0.5 for s in range(6)}
    better = {s: 0.5 + 0.01 * (s + 1) for s in range(6)}
    assert compare(better, full).p_wilcoxon == pytest.approx(2 / 64)
    # One pair worse with the smallest |difference| (rank 1): W− = 1; subsets of ranks 1..6
    # with sum <= 1 are {} and {1}, so p = 2 · 2/64 = 0.0625.
    mixed = dict(better) | {0: 0.49}
    assert compare(mixed, full).p_wilcoxon == pytest.approx(4 / 64)


def test_too_few_seeds_are_said_plainly():
    one = compare({0: 0.6}, {0: 0.5})
    assert one.n == 1 and math.isnan(one.p_t) and "no interval and no test" in one.note
    two = compare({0: 0.6, 1: 0.8}, {0: 0.5, 1: 0.5})
    assert not math.isnan(two.p_t) and "1 degree of freedom" in two.note
    constant = compare({0: 0.6, 1: 0.7, 2: 0.8}, {0: 0.5, 1: 0.6, 2: 0.7})
    assert math.isnan(constant.p_t) and "same for every seed" in constant.note


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.5, math.nan, 0.2])
    assert adjusted[0] == pytest.approx(0.5) and adjusted[2] == pytest.approx(0.4)
    assert math.isnan(adjusted[1])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
