"""The report from cell results: tables, missing cells, Holm across variants, the run note."""

from __future__ import annotations

import math

import pytest

from ablations.report import CellResult, Report, _compute
from ablations.stats import holm

METRICS = ["test/zsl_top1", "test/gzsl_h"]


def report_of(values: dict[str, list[float]], failed: tuple[str, int] | None = None) -> Report:
    variants = [
        {"name": n, "overrides": {} if n == "full" else {"model.x": n}, "origin": "v"}
        for n in values
    ]
    cells = [
        CellResult(
            variant=name,
            split="s",
            seed=seed,
            status="failed: DivergenceError: nan" if failed == (name, seed) else "completed",
            run_id=f"{name}-{seed}",
            metrics={} if failed == (name, seed) else {m: v for m in METRICS},
        )
        for name, seeds in values.items()
        for seed, v in enumerate(seeds)
    ]
    plan = {
        "variants": variants,
        "splits": ["s"],
        "seeds": [0, 1, 2],
        "metrics": METRICS,
        "primary_metric": METRICS[0],
        "confidence": 0.95,
        "statistics": True,
        "base_source": "tiny",
    }
    report = Report(name="r", plan=plan, cells=cells)
    _compute(report)
    return report


def test_tables_and_holm_across_variants():
    report = report_of(
        {"full": [0.50, 0.52, 0.54], "a": [0.40, 0.43, 0.44], "b": [0.51, 0.52, 0.56]}
    )
    table = report.main_table("s")
    assert "| **full** | reference | 3 | 52.0 ± 5.0 |" in table  # s = 0.02, t(2) · s/√3 = 4.97
    assert '| a | `model.x="a"` | 3 | 42.3 ±' in table
    raw = [report.comparisons[("s", n, METRICS[0])].p_t for n in ("a", "b")]
    adjusted = [report.comparisons[("s", n, METRICS[0])].p_holm for n in ("a", "b")]
    assert adjusted == pytest.approx(holm(raw))
    assert report.missing("s") == []
    assert len(report.csv().splitlines()) == 1 + 3 * len(METRICS)


def test_a_failed_cell_is_missing_and_left_out_of_the_statistics():
    report = report_of({"full": [0.5, 0.6, 0.7], "a": [0.4, 0.5, 0.6]}, failed=("a", 1))
    assert report.missing("s") == ["a seed 1: failed: DivergenceError: nan"]
    assert report.summaries[("s", "a", METRICS[0])].n == 2
    comparison = report.comparisons[("s", "a", METRICS[0])]
    assert comparison.n == 2 and comparison.difference.mean == pytest.approx(-0.1)
    assert "Missing cells: a seed 1: failed" in report.markdown()


def test_note_fits_the_tag_limit():
    report = report_of({"full": [0.5, 0.6, 0.7], **{f"v{i}": [0.4, 0.5, 0.6] for i in range(20)}})
    assert report.note() == report.text()
    short = report.note(limit=2500)
    assert len(short) <= 2500 and short.endswith("(differences and tests: report/report.md)\n")
    assert "| **full** |" in short
    assert not math.isnan(report.summaries[("s", "v3", METRICS[0])].mean)


def test_the_figure_does_not_depend_on_the_process_matplotlib_style():
    import matplotlib.pyplot as plt

    report = report_of({"full": [0.5, 0.6, 0.7], "a": [0.4, 0.5, 0.6]})
    before = report.figure_png("s")
    # Optuna's matplotlib plots (a search's report) switch the process to ggplot.
    with plt.style.context("ggplot"):
        assert report.figure_png("s") == before
