"""The ablation report, built from MLflow alone: tables, statistics, CSV, one PNG per split.

`build_report(tracker, root_run_id)` reads the study's parent run (its `ablation.json`: variants,
overrides, seeds, metrics) and its child runs (tags `neuron.variant`, `neuron.split`,
`neuron.seed`, `neuron.status`; final metrics), and computes per split and metric: mean ± t-based
CI over seeds, the difference to the full model with its own CI, the paired t-test, Wilcoxon
where the seeds allow, Holm across the variants (`ablations.stats`). The same function serves
the end of a run and `neuron ablate report`, so the two reports are the same.

Metrics are fractions in MLflow and percentages in the report.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations.spec import REFERENCE, REPORT_METRICS
from ablations.stats import Comparison, Summary, compare, holm, summarise
from ablations.tracking import (
    NOTE,
    ROLE_RUN,
    ROLE_STUDY,
    ROLE_TOP,
    TAG_ABLATION,
    TAG_SEED,
    TAG_VARIANT,
)
from neuron.atomic import write_bytes_atomic, write_text_atomic
from search.report import log_files, markdown_table
from search.tracking import TAG_ROLE, TAG_SPLIT, TAG_STATUS, MlflowTracker

METRIC_SOURCES = {
    metric: f"selected/{metric}" for metric in REPORT_METRICS if metric.startswith("val/")
}
"""Report metric → the child run's metric (validation at the epoch `fit` selected)."""

NOTE_LIMIT = 8000
"""Characters of a tag value the tracking layer sends (search.tracking.MlflowTracker.log)."""

METRIC_LABELS = {
    "val/zsl_top1": "val ZSL",
    "val/gzsl_seen": "val GZSL S",
    "val/gzsl_unseen": "val GZSL U",
    "val/gzsl_h": "val GZSL H",
    "test/zsl_top1": "test ZSL",
    "test/gzsl_seen": "GZSL S",
    "test/gzsl_unseen": "GZSL U",
    "test/gzsl_h": "GZSL H",
}


class ReportError(ValueError):
    """The study cannot be found or read in the store; the message says why."""


@dataclass(frozen=True)
class CellResult:
    variant: str
    split: str
    seed: int
    status: str
    run_id: str
    metrics: dict[str, float]


@dataclass
class Report:
    name: str
    plan: dict[str, Any]
    cells: list[CellResult]
    summaries: dict[tuple[str, str, str], Summary] = field(default_factory=dict)
    """(split, variant, metric) → over seeds."""
    comparisons: dict[tuple[str, str, str], Comparison] = field(default_factory=dict)
    """(split, variant, metric) → against the full model (Holm applied)."""

    @property
    def variants(self) -> list[dict[str, Any]]:
        return list(self.plan["variants"])

    @property
    def splits(self) -> list[str]:
        return list(self.plan["splits"])

    def missing(self, split: str) -> list[str]:
        """Cells of `split` without a completed run, with their status."""
        done = {(c.variant, c.seed): c for c in self.cells if c.split == split}
        lines = []
        for variant in self.variants:
            for seed in self.plan["seeds"]:
                cell = done.get((variant["name"], seed))
                if cell is None:
                    lines.append(f"{variant['name']} seed {seed}: no run")
                elif cell.status != "completed":
                    lines.append(f"{variant['name']} seed {seed}: {cell.status}")
        return lines

    # Text ---------------------------------------------------------------------------------

    def header(self) -> str:
        seeds = ", ".join(str(s) for s in self.plan["seeds"])
        confidence = round(100 * self.plan["confidence"])
        return (
            f"# Ablation study `{self.name}`\n\n"
            f"Base: {self.plan['base_source']}. Seeds: {seeds}. Values are percentages, "
            f"mean ± half-width of the {confidence} % t-interval over seeds. Δ = variant − "
            f"full, paired by seed, with its own {confidence} % interval; p: two-sided paired "
            "t-test (exact), Holm-corrected across the variants of the split; Wilcoxon "
            "signed-rank where the seeds allow (≥ 6)."
        )

    def main_table(self, split: str) -> str:
        metrics = self.plan["metrics"]
        head = ["variant", "changes", "n", *(METRIC_LABELS.get(m, m) for m in metrics)]
        rows = [head, ["---"] * 2 + ["---:"] * (len(head) - 2)]
        for variant in self.variants:
            name = variant["name"]
            n = max((self.summaries[(split, name, m)].n for m in metrics), default=0)
            cells = [_estimate(self.summaries[(split, name, m)]) for m in metrics]
            label = f"**{name}**" if name == REFERENCE else name
            rows.append([label, _changes(variant), str(n), *cells])
        return markdown_table(rows)

    def difference_table(self, split: str, metric: str) -> str:
        rows = [
            [
                "variant",
                f"Δ {METRIC_LABELS.get(metric, metric)}",
                "p (t)",
                "p (Holm)",
                "p (Wilcoxon)",
                "note",
            ],
            ["---", "---:", "---:", "---:", "---:", "---"],
        ]
        comparisons = [self.comparisons[(split, v["name"], metric)] for v in self.variants[1:]]
        notes = [c.note.split("; ") if c.note else [] for c in comparisons]
        # A remark every row shares (e.g. too few seeds for Wilcoxon) is said once, below.
        shared = [n for n in notes[0] if all(n in other for other in notes)] if notes else []
        for variant, comparison, note in zip(self.variants[1:], comparisons, notes, strict=True):
            rows.append(
                [
                    variant["name"],
                    _difference(comparison.difference),
                    _p(comparison.p_t),
                    _p(comparison.p_holm),
                    _p(comparison.p_wilcoxon),
                    "; ".join(n for n in note if n not in shared),
                ]
            )
        table = markdown_table(rows)
        return table + ("\n\nEvery row: " + "; ".join(shared) + "." if shared else "")

    def split_section(self, split: str, all_metrics: bool = True) -> str:
        parts = [f"## {split}", "", self.main_table(split)]
        compared = self.plan["metrics"] if all_metrics else [self.plan["primary_metric"]]
        if len(self.variants) > 1 and self.plan["statistics"]:
            for metric in compared:
                parts += [
                    "",
                    f"Difference to full, {metric}:",
                    "",
                    self.difference_table(split, metric),
                ]
        missing = self.missing(split)
        parts += ["", "Missing cells: " + ("none" if not missing else "; ".join(missing))]
        return "\n".join(parts)

    def markdown(self) -> str:
        """The whole report (report.md)."""
        sections = [self.header()] + [self.split_section(s) for s in self.splits]
        return "\n\n".join(sections) + "\n"

    def text(self) -> str:
        """The summary: main tables and the primary metric's differences (printed at the end, and
        the parent run's description in MLflow)."""
        sections = [self.header()] + [self.split_section(s, all_metrics=False) for s in self.splits]
        return "\n\n".join(sections) + "\n"

    def note(self, split: str | None = None, limit: int = NOTE_LIMIT) -> str:
        """The run description: the summary (of one split, or of all), shortened to the main
        tables when it would pass MLflow's tag limit."""
        splits = [split] if split else self.splits
        full = "\n\n".join(
            [self.header()] + [self.split_section(s, all_metrics=False) for s in splits]
        )
        if len(full) <= limit:
            return full + "\n"
        tables = "\n\n".join([self.header()] + [f"## {s}\n\n{self.main_table(s)}" for s in splits])
        tail = "\n\n(differences and tests: report/report.md)"
        return tables[: limit - len(tail)] + tail + "\n"

    def csv(self) -> str:
        """One row per (split, variant, metric): the summary and the comparison."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
                "split",
                "variant",
                "metric",
                "n",
                "mean",
                "std",
                "ci_low",
                "ci_high",
                "pairs",
                "diff_mean",
                "diff_ci_low",
                "diff_ci_high",
                "t",
                "p_t",
                "p_holm",
                "p_wilcoxon",
                "note",
            ]
        )
        for split in self.splits:
            for variant in self.variants:
                for metric in self.plan["metrics"]:
                    s = self.summaries[(split, variant["name"], metric)]
                    c = self.comparisons.get((split, variant["name"], metric))
                    row: list[Any] = [split, variant["name"], metric, s.n]
                    row += [_num(x) for x in (s.mean, s.std, s.ci_low, s.ci_high)]
                    if c is None:
                        row += [""] * 9
                    else:
                        d = c.difference
                        row += (
                            [c.n]
                            + [
                                _num(x)
                                for x in (
                                    d.mean,
                                    d.ci_low,
                                    d.ci_high,
                                    c.t_statistic,
                                    c.p_t,
                                    c.p_holm,
                                    c.p_wilcoxon,
                                )
                            ]
                            + [c.note]
                        )
                    writer.writerow(row)
        return out.getvalue()

    def figure_png(self, split: str) -> bytes:
        """Bars (mean) with CI whiskers per variant, one panel per metric; full highlighted.
        Drawn in matplotlib's default style whatever the process set before, so a report
        rebuilt elsewhere gives the same bytes."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with plt.style.context("default"):
            return self._draw(split)

    def _draw(self, split: str) -> bytes:
        import matplotlib.pyplot as plt

        metrics = self.plan["metrics"]
        names = [v["name"] for v in self.variants]
        figure, axes = plt.subplots(
            len(metrics),
            1,
            figsize=(max(6.0, 0.55 * len(names) + 2), 2.6 * len(metrics)),
            squeeze=False,
        )
        for axis, metric in zip(axes[:, 0], metrics, strict=True):
            summaries = [self.summaries[(split, n, metric)] for n in names]
            means = [100 * s.mean if s.n else 0.0 for s in summaries]
            errors = [100 * s.half_width if s.n > 1 else 0.0 for s in summaries]
            colours = ["tab:orange" if n == REFERENCE else "tab:blue" for n in names]
            axis.bar(range(len(names)), means, yerr=errors, capsize=3, color=colours)
            reference = summaries[0]
            if reference.n:
                axis.axhline(100 * reference.mean, color="tab:orange", linewidth=0.8, ls="--")
            # Percentages: whiskers past 0 or 100 % (few seeds, wide intervals) are cut there.
            axis.set_ylim(
                0, min(100.0, max(m + e for m, e in zip(means, errors, strict=True)) * 1.1) or 1
            )
            axis.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
            axis.set_xticks(range(len(names)))
            axis.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        axes[0, 0].set_title(
            f"{self.name} · {split}\nmean ± {round(100 * self.plan['confidence'])} % CI over "
            "seeds; the full model in orange",
            fontsize=10,
        )
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
        plt.close(figure)
        return buffer.getvalue()


def _changes(variant: dict[str, Any]) -> str:
    if not variant["overrides"]:
        return "reference"
    return ", ".join(f"`{k}={json.dumps(_shown(v))}`" for k, v in variant["overrides"].items())


def _shown(value: Any) -> Any:
    """A value as the report shows it: floats to 4 significant digits (the run's config in
    MLflow keeps every digit)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, list):
        return [_shown(v) for v in value]
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    return value


def _estimate(summary: Summary) -> str:
    if summary.n == 0:
        return "–"
    if summary.n == 1:
        return f"{100 * summary.mean:.1f} (1 seed)"
    return f"{100 * summary.mean:.1f} ± {100 * summary.half_width:.1f}"


def _difference(summary: Summary) -> str:
    if summary.n == 0:
        return "–"
    if summary.n == 1:
        return f"{100 * summary.mean:+.1f}"
    return f"{100 * summary.mean:+.1f} [{100 * summary.ci_low:+.1f}, {100 * summary.ci_high:+.1f}]"


def _p(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _num(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


# --------------------------------------------------------------------------------------------
# From MLflow


def find_root(tracker: MlflowTracker, name_or_run_id: str) -> Any:
    """The top run of a study (or the study run of a one-split study), by name or run id."""
    run = None
    try:
        run = tracker.client.get_run(name_or_run_id)
    except Exception:
        run = None
    if run is None:
        run = tracker.find_run({TAG_ABLATION: name_or_run_id, TAG_ROLE: ROLE_TOP}) or (
            tracker.find_run({TAG_ABLATION: name_or_run_id, TAG_ROLE: ROLE_STUDY})
        )
    if run is None or run.data.tags.get(TAG_ROLE) not in (ROLE_TOP, ROLE_STUDY):
        raise ReportError(
            f"{name_or_run_id!r}: no ablation study with that name or parent run id in experiment "
            f"{tracker.experiment!r} at {tracker.tracking_uri}; `neuron ablate list` shows them"
        )
    return run


def _plan(tracker: MlflowTracker, run_id: str) -> dict[str, Any]:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as folder:
        path = tracker.client.download_artifacts(run_id, "ablation.json", folder)
        return json.loads(Path(path).read_text())


def build_report(tracker: MlflowTracker, root_run_id: str) -> Report:
    """Read the study under `root_run_id` from MLflow and compute every statistic."""
    root = tracker.client.get_run(root_run_id)
    plan = _plan(tracker, root_run_id)
    if root.data.tags.get(TAG_ROLE) == ROLE_TOP:
        studies = [
            r for r in tracker.children(root_run_id) if r.data.tags.get(TAG_ROLE) == ROLE_STUDY
        ]
    else:
        studies = [root]
        plan["splits"] = [root.data.tags[TAG_SPLIT]]
    cells = []
    for study in studies:
        for run in tracker.children(study.info.run_id):
            tags = run.data.tags
            if tags.get(TAG_ROLE) != ROLE_RUN:
                continue
            metrics = {
                m: run.data.metrics[METRIC_SOURCES.get(m, m)]
                for m in plan["metrics"]
                if METRIC_SOURCES.get(m, m) in run.data.metrics
            }
            cells.append(
                CellResult(
                    variant=tags[TAG_VARIANT],
                    split=tags[TAG_SPLIT],
                    seed=int(tags[TAG_SEED]),
                    status=tags.get(TAG_STATUS, run.info.status.lower()),
                    run_id=run.info.run_id,
                    metrics=metrics,
                )
            )
    cells.sort(key=lambda c: (c.split, c.variant, c.seed))
    report = Report(name=root.data.tags[TAG_ABLATION], plan=plan, cells=cells)
    _compute(report)
    return report


def _compute(report: Report) -> None:
    confidence = report.plan["confidence"]
    for split in report.splits:
        for metric in report.plan["metrics"]:
            values: dict[str, dict[int, float]] = {}
            for variant in report.variants:
                values[variant["name"]] = {
                    c.seed: c.metrics[metric]
                    for c in report.cells
                    if c.split == split
                    and c.variant == variant["name"]
                    and c.status == "completed"
                    and metric in c.metrics
                    and math.isfinite(c.metrics[metric])
                }
                report.summaries[(split, variant["name"], metric)] = summarise(
                    [values[variant["name"]][s] for s in sorted(values[variant["name"]])],
                    confidence,
                )
            others = [v["name"] for v in report.variants[1:]]
            comparisons = [compare(values[n], values[REFERENCE], confidence) for n in others]
            adjusted = holm([c.p_t for c in comparisons])
            for name, comparison, p_holm in zip(others, comparisons, adjusted, strict=True):
                report.comparisons[(split, name, metric)] = Comparison(
                    n=comparison.n,
                    difference=comparison.difference,
                    t_statistic=comparison.t_statistic,
                    p_t=comparison.p_t,
                    p_wilcoxon=comparison.p_wilcoxon,
                    p_holm=p_holm,
                    note=comparison.note,
                )


def write_report(report: Report, folder: Path) -> list[Path]:
    """report.md, report.csv and `<split>.png` in `folder` (each written atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "report.md", folder / "report.csv"]
    write_text_atomic(written[0], report.markdown())
    write_text_atomic(written[1], report.csv())
    for split in report.splits:
        path = folder / f"{split}.png"
        write_bytes_atomic(path, report.figure_png(split))
        written.append(path)
    return written


def publish_report(
    tracker: MlflowTracker, report: Report, folder: Path, stage1: dict[str, int]
) -> None:
    """Write the report, log it on the parent run(s) with the summary as their description,
    and close the parents."""
    root = find_root(tracker, report.name)
    files = write_report(report, folder)
    log_files(tracker, root.info.run_id, files, "report")
    counts = {
        "neuron.runs_completed": str(sum(c.status == "completed" for c in report.cells)),
        "neuron.runs_failed": str(sum(c.status.startswith("failed") for c in report.cells)),
    } | {f"neuron.stage1.{k}": str(v) for k, v in stage1.items()}
    studies = (
        [r for r in tracker.children(root.info.run_id) if r.data.tags.get(TAG_ROLE) == ROLE_STUDY]
        if root.data.tags.get(TAG_ROLE) == ROLE_TOP
        else []
    )
    for study in studies:
        split = study.data.tags[TAG_SPLIT]
        log_files(tracker, study.info.run_id, [folder / f"{split}.png"], "report")
        tracker.log(
            study.info.run_id,
            tags={NOTE: report.note(split), TAG_STATUS: "completed"},
        )
        tracker.finish(study.info.run_id, "FINISHED")
    tracker.log(root.info.run_id, tags={NOTE: report.note(), TAG_STATUS: "completed"} | counts)
    tracker.finish(root.info.run_id, "FINISHED")
