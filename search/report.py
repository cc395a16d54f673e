"""The report stage: tables, plots and summaries built from the runs in MLflow.

Shared by search studies (`summarise_study`: results table, best config, Optuna plots on the
study run) and ablation studies (`ablations.report`). Everything here reads what the tracking
layer (`search.tracking`) wrote, so a report can be rebuilt later from the store alone.
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
from mlflow.entities import Metric
from ray.tune.experiment import Trial

from neuron.atomic import write_text_atomic
from search.tracking import (
    TAG_EPOCHS,
    TAG_STATUS,
    TAG_TRIAL,
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


def optuna_plots(study: optuna.Study) -> dict[str, Any]:
    """Optuna's optimisation history, parameter importances (≥ 2 completed trials whose values
    differ) and parallel coordinates as plotly figures."""
    from optuna import visualization

    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    figures = {}
    if completed:
        figures["optimization_history"] = visualization.plot_optimization_history(study)
        figures["parallel_coordinate"] = visualization.plot_parallel_coordinate(study)
    if len(completed) >= 2 and len({t.value for t in completed}) > 1 and completed[0].params:
        with warnings.catch_warnings():
            # PED-ANOVA warns about every regime with fewer than 2 trials in a small study.
            warnings.simplefilter("ignore", UserWarning)
            figures["param_importances"] = visualization.plot_param_importances(study)
    return figures


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
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"best/{k}", float(v), now, 0)
            for k, v in best.items()
            if k == "objective" or (isinstance(k, str) and k.startswith(("test/", "selected/")))
            if isinstance(v, (int, float)) and not math.isnan(float(v))
        ]
    try:
        optuna_study = optuna.load_study(study_name=study.study_name, storage=study.optuna_storage)
    except KeyError:
        optuna_study = None
    if optuna_study is not None:
        _fail_orphaned_optuna_trials(optuna_study)
        plots = output / "plots"
        plots.mkdir(exist_ok=True)
        for name, figure in optuna_plots(optuna_study).items():
            # plotly.js embedded: the plots open offline (about 3.5 MB each).
            figure.write_html(str(plots / f"{name}.html"), include_plotlyjs=True)
            tracker.client.log_artifact(study_run_id, str(plots / f"{name}.html"), "plots")
    tracker.log(study_run_id, metrics=metrics, tags=tags | {TAG_STATUS: "completed"})
    tracker.finish(study_run_id, "FINISHED")


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
