"""The report stage: tables, plots and summaries built from the runs in MLflow.

Shared by search studies (`summarise_study`: results table, best config, the confirmation spec
that trains the best trials again with new seeds, Optuna plots on the study run) and ablation
studies (`ablations.report`). Everything here reads what the tracking layer (`search.tracking`)
wrote, so a report can be rebuilt later from the store alone.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from mlflow.entities import Metric
from ray.tune.experiment import Trial

from neuron.atomic import write_text_atomic
from neuron.config import config_from_plain
from search.spec import ConfirmSpec
from search.tracking import (
    TAG_COMPARE_URL,
    TAG_EPOCHS,
    TAG_NOTE,
    TAG_STATUS,
    TAG_TRIAL,
    TAG_TRIALS_URL,
    MlflowTracker,
    StudyInfo,
)


def results_table(tracker: MlflowTracker, study_run_id: str) -> pd.DataFrame:
    """One row per trial run: ids, status, fidelity, objective, search params, final metrics."""
    rows = []
    for run in tracker.children(study_run_id):
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        row: dict[str, Any] = {
            "trial_id": tags.get(TAG_TRIAL),
            "run_id": run.info.run_id,
            "status": tags.get(TAG_STATUS),
            "epochs_reached": int(tags.get(TAG_EPOCHS, metrics.get("epoch", 0)) or 0),
            "objective": metrics.get("objective", math.nan),
        }
        row |= {k: _number(v) for k, v in sorted(params.items()) if k.startswith("search.")}
        row |= {
            k: v
            for k, v in sorted(metrics.items())
            if k.startswith(("selected/", "test/", "chance/")) or k == "best_epoch"
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _number(text: str) -> Any:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def best_row(table: pd.DataFrame, mode: str) -> pd.Series | None:
    """The best completed trial by objective (trials stopped early only when none completed)."""
    if table.empty:
        return None
    candidates = table[table["status"] == "completed"].dropna(subset=["objective"])
    if candidates.empty:
        candidates = table[~table["status"].astype(str).str.startswith("failed")].dropna(
            subset=["objective"]
        )
    if candidates.empty:
        return None
    index = candidates["objective"].idxmax() if mode == "max" else candidates["objective"].idxmin()
    return candidates.loc[index]


IMPORTANCES_NEED = "needs at least 2 completed trials with different objective values"


def optuna_plots(study: optuna.Study) -> tuple[dict[str, Any], str | None]:
    """Optuna's optimisation history, parameter importances and parallel coordinates as
    matplotlib figures, and why the importances are missing when they are (fewer than 2
    completed trials whose values differ, or no searched parameter)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from optuna.visualization import matplotlib as plots

    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    figures: dict[str, Any] = {}
    # Optuna's plots switch the process to its ggplot style (`plt.style.use`); the context
    # restores the caller's settings (an ablation report drawn later in the same process).
    with warnings.catch_warnings(), matplotlib.rc_context():
        # Optuna marks its matplotlib backend experimental; PED-ANOVA warns about every regime
        # with fewer than 2 trials in a small study.
        warnings.simplefilter("ignore")
        if completed:
            figures["optimization_history"] = plots.plot_optimization_history(study)
            if completed[0].params:
                figures["parallel_coordinate"] = plots.plot_parallel_coordinate(study)
        values = {t.value for t in completed}
        if len(completed) < 2 or len(values) < 2:
            missing = (
                f"parameter importances not computed: {IMPORTANCES_NEED} "
                f"({len(completed)} completed, {len(values)} distinct values)"
            )
        elif not completed[0].params:
            missing = "parameter importances not computed: no parameter was searched"
        else:
            figures["param_importances"] = plots.plot_param_importances(study)
            missing = None
    return figures, missing


def save_plot(axes: Any, path: Path) -> None:
    """A matplotlib plot as a PNG (tens of kB; the MLflow artifact viewer shows images inline),
    written atomically."""
    import matplotlib.pyplot as plt

    figure = axes.figure if hasattr(axes, "figure") else axes[0].figure  # (Axes or an array)
    figure.set_size_inches(9, 5.5)
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)
    temporary.replace(path)


def description(
    study: StudyInfo,
    table: pd.DataFrame,
    counts: dict[str, int],
    compare_url: str | None,
    trials_url: str | None,
    notes: list[str],
    top: int = 10,
) -> str:
    """The study run's description (Markdown, shown at the top of its MLflow page): counts,
    the top trials with their objective and searched parameters, the compare link."""
    done = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())
    lines = [
        f"**Search study {study.study_name}**: objective {study.mode} `{study.objective}` "
        f"(validation, pseudo-unseen classes); {len(table)} trials: {done}.",
        "",
    ]
    ranked = table.dropna(subset=["objective"]) if not table.empty else table
    if ranked.empty:
        lines.append("No trial reported a value of the objective.")
    else:
        ranked = ranked.sort_values("objective", ascending=study.mode == "min").head(top)
        params = [c for c in ranked.columns if str(c).startswith("search.")]
        header = ["rank", "trial", "objective", "status", "epochs", *(p[7:] for p in params)]
        if "test/zsl_top1" in ranked.columns:
            header.append("test ZSL top-1")
        lines += [
            f"Top {len(ranked)} trials by objective:",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for rank, (_, row) in enumerate(ranked.iterrows(), start=1):
            cells = [
                str(rank),
                f"{row['trial_id']}",
                f"{row['objective']:.4f}",
                str(row["status"]),
                str(row["epochs_reached"]),
                *(_cell(row[p]) for p in params),
            ]
            if "test/zsl_top1" in ranked.columns:
                cells.append(_cell(row["test/zsl_top1"]))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "The best trial's config is the artifact `best_config.yaml`."]
    if trials_url:
        lines += [
            "",
            f"[All trials, best first, with their objective and parameters]({trials_url})",
        ]
    if compare_url:
        lines += ["", f"[Compare the trials side by side]({compare_url})"]
    if notes:
        lines += ["", *(f"Note: {note}." for note in notes)]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "/")


def summarise_study(
    tracker: MlflowTracker, study: StudyInfo, study_run_id: str, trials: list[Trial]
) -> None:
    """Best trial + its ready-to-use config, results table (CSV, Parquet) and Optuna plots, on
    the study run and in `study.output_dir`; then the study run is FINISHED."""
    output = Path(study.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    table = results_table(tracker, study_run_id)
    table.to_csv(output / "results.csv", index=False)
    table.to_parquet(output / "results.parquet", index=False)
    tracker.client.log_artifact(study_run_id, str(output / "results.csv"))
    tracker.client.log_artifact(study_run_id, str(output / "results.parquet"))
    statuses = table["status"].astype(str) if not table.empty else pd.Series(dtype=str)
    counts = {
        "completed": int((statuses == "completed").sum()),
        "stopped_early": int(statuses.str.startswith("stopped").sum()),
        "failed": int(statuses.str.startswith("failed").sum()),
    }
    tags = {f"neuron.trials_{k}": str(v) for k, v in counts.items()}
    metrics = []
    best = best_row(table, study.mode)
    if best is not None:
        config_yaml = _best_config_yaml(tracker, study, best, trials)
        header = (
            f"# Best trial {best['trial_id']} of search study {study.study_name}: "
            f"{study.objective} = {best['objective']:.4f} (MLflow run {best['run_id']}).\n"
            f"# Train it with: neuron train {output / 'best_config.yaml'}\n"
            "# (run.threads and run.device are the search's per-trial settings; change them freely)\n"
        )
        write_text_atomic(output / "best_config.yaml", header + config_yaml)
        tracker.client.log_artifact(study_run_id, str(output / "best_config.yaml"))
        tags |= {
            "neuron.best_trial_id": str(best["trial_id"]),
            "neuron.best_run_id": str(best["run_id"]),
        }
        confirm = confirmation_spec(
            study,
            tracker.tracking_uri,
            tracker.experiment,
            study_run_id,
            _ranked_overrides(table, study.mode, trials, str(best["trial_id"])),
        )
        if confirm is not None:
            write_text_atomic(output / "confirm.yaml", confirm)
            tracker.client.log_artifact(study_run_id, str(output / "confirm.yaml"))
        else:
            (output / "confirm.yaml").unlink(missing_ok=True)
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"best/{k}", float(v), now, 0)
            for k, v in best.items()
            if k == "objective" or (isinstance(k, str) and k.startswith(("test/", "selected/")))
            if isinstance(v, (int, float)) and not math.isnan(float(v))
        ]
    notes = []
    try:
        optuna_study = optuna.load_study(study_name=study.study_name, storage=study.optuna_storage)
    except KeyError:
        optuna_study = None
    if optuna_study is not None:
        _fail_orphaned_optuna_trials(optuna_study)
        plots = output / "plots"
        plots.mkdir(exist_ok=True)
        figures, missing = optuna_plots(optuna_study)
        for name, axes in figures.items():
            save_plot(axes, plots / f"{name}.png")
            tracker.client.log_artifact(study_run_id, str(plots / f"{name}.png"), "plots")
        if missing:
            notes.append(missing)
            tags["neuron.plots_note"] = missing
    with_value = table.dropna(subset=["objective"]) if not table.empty else table
    compare_url = None
    if not with_value.empty:
        ranked = with_value.sort_values("objective", ascending=study.mode == "min")
        compare_url = tracker.compare_url([str(r) for r in ranked["run_id"].head(50)])
        tags[TAG_COMPARE_URL] = compare_url
    params = sorted(c for c in table.columns if str(c).startswith("search.")) if len(table) else []
    trials_url = tracker.share_trials_view(study, params)
    tags[TAG_TRIALS_URL] = trials_url
    tags[TAG_NOTE] = description(study, table, counts, compare_url, trials_url, notes)
    tracker.log(study_run_id, metrics=metrics, tags=tags | {TAG_STATUS: "completed"})
    tracker.finish(study_run_id, "FINISHED")


CONFIRM_REPORTED = ("val/zsl_top1", "val/gzsl_h", "test/zsl_top1", "test/gzsl_h")
"""Metrics of the confirmation's report besides the objective (what `neuron ablate` reports)."""
CONFIRMABLE = ("val/zsl_top1", "val/gzsl_seen", "val/gzsl_unseen", "val/gzsl_h")
"""Objectives an ablation report can compare (the validation part of its metrics)."""


def confirmation_spec(
    study: StudyInfo,
    tracking_uri: str,
    experiment: str,
    study_run_id: str,
    ranked: list[tuple[str, dict[str, Any]]],
) -> str | None:
    """An ablation spec (`neuron ablate`) that trains the study's best trials again with new
    seeds, so their ranking can be checked against seed noise on validation: the best trial is
    the base (`full`, from the search in MLflow), each runner-up a variant named
    `rank<k>-<trial id>` whose overrides set the searched parameters where it differs from the
    best (a runner-up with the best's configuration, or one listed before, is left out: an
    ablation refuses variants that change nothing or repeat another). `ranked`: (trial id,
    overrides) of completed trials, the study's best first. None without a runner-up, or for an
    objective an ablation report does not compare (`CONFIRMABLE`)."""
    confirm = ConfirmSpec(**study.settings.get("confirm", {}))
    if len(ranked) < 2 or confirm.top == 0 or study.objective not in CONFIRMABLE:
        return None
    base = config_from_plain(study.base_config)
    keys = sorted({key for _, overrides in ranked[: confirm.top] for key in overrides})
    best = base.replace(ranked[0][1]).to_dict()
    variants: dict[str, dict[str, Any]] = {}
    for rank, (trial_id, overrides) in enumerate(ranked[1 : confirm.top], start=2):
        # Every searched key where this trial differs from the best (the base); a key the best
        # trial set but this one did not (a conditional parameter) takes the base config's value.
        plain = base.replace(overrides).to_dict()
        changes = {
            key: _dotted(plain, key) for key in keys if _dotted(plain, key) != _dotted(best, key)
        }
        if changes and changes not in variants.values():
            variants[f"rank{rank}-{trial_id}"] = changes
    if not variants:
        return None
    settings = study.settings
    first = base.run.seed + 1
    metrics = [study.objective, *(m for m in CONFIRM_REPORTED if m != study.objective)]
    spec = {
        "base": {
            "search": study_run_id,
            "search_tracking_uri": tracking_uri,
            "search_experiment": experiment,
        },
        "variants": variants,
        "splits": [study.split],
        "seeds": list(range(first, first + confirm.seeds)),
        "metrics": metrics,
        "primary_metric": study.objective,
        "max_concurrent_trials": settings.get("max_concurrent_trials", 2),
        "resources": settings.get("resources", {"cpu": 1, "gpu": 0}),
        "output_dir": str(Path(study.output_dir).resolve()),
        "tracking_uri": tracking_uri,
        "experiment": "neuron-confirm",
    }
    # Where the search ran, the confirmation runs: its stage-1 placement, shared Tune storage
    # (a cluster's NFS or s3:// path; the study gets its own folder there) and Ray cluster.
    for key in ("prepare", "storage_path", "address", "max_failures"):
        if settings.get(key) is not None:
            spec[key] = settings[key]
    header = (
        f"# Are the best trials of search study {study.study_name} better than seed noise?\n"
        f"# The top {len(variants) + 1} completed trials by {study.objective}, trained again "
        f"with run seeds {first}-{first + confirm.seeds - 1}\n"
        f"# (the search trained every trial with seed {base.run.seed}). "
        "`full` is the best trial, each\n"
        "# rank<k>-<trial> a runner-up (its parameters that differ from the best's); the report\n"
        "# gives mean and CI per trial and paired tests against the best. Choose on the\n"
        "# validation metrics; the test metrics are shown, never a reason to pick a trial. Run:\n"
        f"#   neuron ablate {Path(study.output_dir).resolve() / 'confirm.yaml'}\n"
        "# (more seeds: add seeds=[...] on the command line).\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False)


def _dotted(plain: dict[str, Any], key: str) -> Any:
    value: Any = plain
    for part in key.split("."):
        value = value[part]
    return value


def _ranked_overrides(
    table: pd.DataFrame, mode: str, trials: list[Trial], best: str
) -> list[tuple[str, dict[str, Any]]]:
    """(trial id, overrides) of the completed trials, `best` first, then by objective (those
    whose Tune trial this driver holds: all of them, unless a resumed search lost some; none
    when it lost the best)."""
    overrides = {t.trial_id: dict(t.config.get("overrides", {})) for t in trials}
    if best not in overrides:
        return []
    completed = table[table["status"] == "completed"].dropna(subset=["objective"])
    completed = completed.sort_values("objective", ascending=mode == "min", kind="stable")
    others = [str(t) for t in completed["trial_id"] if str(t) in overrides and str(t) != best]
    return [(t, overrides[t]) for t in (best, *others)]


def _best_config_yaml(
    tracker: MlflowTracker, study: StudyInfo, best: pd.Series, trials: list[Trial]
) -> str:
    """The resolved config of the best trial: from its Tune trial, else its run's artifact."""
    trial = next((t for t in trials if t.trial_id == best["trial_id"]), None)
    if trial is not None:
        return study.trial_config_yaml(dict(trial.config.get("overrides", {})))
    with tempfile.TemporaryDirectory() as folder:
        path = tracker.client.download_artifacts(best["run_id"], "config.yaml", folder)
        return Path(path).read_text()


def _fail_orphaned_optuna_trials(study: optuna.Study) -> None:
    """Optuna trials asked just before the driver died (after Tune's last experiment checkpoint)
    never reach Tune again; mark them FAIL so no trial stays RUNNING once the study ends."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


# --------------------------------------------------------------------------------------------
# Shared by the ablation report


def markdown_table(rows: list[list[str]]) -> str:
    """A Markdown table from a header row, an alignment row (`---`, `---:`) and data rows."""
    return "\n".join(
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
    )


def log_files(tracker: MlflowTracker, run_id: str, files: list[Path], artifact_path: str) -> None:
    """Log local files as artifacts of `run_id` under `artifact_path`."""
    for path in files:
        tracker.client.log_artifact(run_id, str(path), artifact_path)
