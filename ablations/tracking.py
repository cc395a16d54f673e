"""MLflow runs of an ablation study, written from the Tune driver (the only writer).

    ablation run (only with several splits)    tags neuron.role=ablation
      └─ study run, one per split                tags neuron.role=ablation_study, neuron.split
           └─ one run per (variant, seed)        tags neuron.role=ablation_run, neuron.variant,
                                                 neuron.split, neuron.seed, neuron.override.*

Child runs are named `<variant> · <split> · seed <s>` and found again by `neuron.ablation` +
`neuron.cell`, so a resumed study re-attaches to its runs (no duplicates). The plan (variants,
their overrides, seeds, metrics) is logged on every parent as `ablation.json`; the report is
rebuilt from these runs alone (`ablations.report`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from mlflow.entities import Metric
from ray.tune.experiment import Trial

from ablations.spec import Cell, Plan
from search.tracking import (
    TAG_EPOCHS,
    TAG_ROLE,
    TAG_SPLIT,
    TAG_STATUS,
    MlflowTracker,
    TrialRunsCallback,
    flatten,
    trial_status,
)

TAG_ABLATION = "neuron.ablation"
TAG_CELL = "neuron.cell"
TAG_VARIANT = "neuron.variant"
TAG_SEED = "neuron.seed"
TAG_STAGE1_SEED = "neuron.stage1_seed"
ROLE_TOP = "ablation"
ROLE_STUDY = "ablation_study"
ROLE_RUN = "ablation_run"
NOTE = "mlflow.note.content"
"""The run description shown on the MLflow run page."""


def start_parents(
    tracker: MlflowTracker, name: str, plan: Plan
) -> tuple[str | None, dict[str, str]]:
    """(top run id or None, split → study run id), created or found again."""
    plan_json = json.dumps(plan.to_plain(), indent=2)
    settings = {
        "seeds": json.dumps(list(plan.spec.seeds)),
        "variants": json.dumps([v.name for v in plan.variants]),
        "splits": json.dumps(list(plan.splits)),
        "retrain_stage1_per_seed": str(plan.spec.retrain_stage1_per_seed),
        "confidence": str(plan.spec.confidence),
        "base": plan.base_source,
    }
    top = None
    if len(plan.splits) > 1:
        top, created = tracker.ensure_run(
            {TAG_ABLATION: name, TAG_ROLE: ROLE_TOP},
            name,
            None,
            tracker.provenance_tags() | {"neuron.splits": json.dumps(list(plan.splits))},
        )
        if created:
            tracker.log(top, params=flatten(settings, "ablation."))
            tracker.client.log_text(top, plan_json, "ablation.json")
    studies = {}
    for split in plan.splits:
        run_id, created = tracker.ensure_run(
            {TAG_ABLATION: name, TAG_ROLE: ROLE_STUDY, TAG_SPLIT: split},
            f"{name}/{split}" if top else name,
            top,
            tracker.provenance_tags() | {TAG_STATUS: "running"},
        )
        if created:
            tracker.log(
                run_id,
                params=flatten(settings, "ablation.") | flatten(plan.bases[split], "base."),
            )
            tracker.client.log_text(run_id, plan_json, "ablation.json")
        else:
            tracker.log(run_id, tags={TAG_STATUS: "running"})
        studies[split] = run_id
    return top, studies


def cell_tags(name: str, plan: Plan, cell: Cell) -> dict[str, str]:
    variant = plan.variant(cell.variant)
    return {
        TAG_ABLATION: name,
        TAG_ROLE: ROLE_RUN,
        TAG_VARIANT: cell.variant,
        TAG_SPLIT: cell.split,
        TAG_SEED: str(cell.seed),
        TAG_STAGE1_SEED: str(cell.stage1_seed),
        "neuron.variant_origin": variant.origin,
    } | {f"neuron.override.{k}": json.dumps(v) for k, v in variant.overrides.items()}


class AblationCallback(TrialRunsCallback):
    """One MLflow child run per cell: params = the resolved config, per-epoch metrics, final
    status (`completed` / `failed: reason`); interrupted studies are marked KILLED."""

    def __init__(
        self,
        tracker: MlflowTracker,
        name: str,
        plan: Plan,
        study_runs: dict[str, str],
        top_run: str | None,
    ) -> None:
        super().__init__(tracker)
        self.name = name
        self.plan = plan
        self.study_runs = study_runs
        self.top_run = top_run

    def cell(self, trial: Trial) -> Cell:
        key = trial.config["cell"]
        return next(c for c in self.plan.cells if c.key == key)

    def open_run(self, trial: Trial) -> tuple[str, bool]:
        cell = self.cell(trial)
        run_id, created = self.tracker.ensure_run(
            {TAG_ABLATION: self.name, TAG_CELL: cell.key},
            cell.title,
            self.study_runs[cell.split],
            cell_tags(self.name, self.plan, cell)
            | {TAG_STATUS: "running", "neuron.trial_id": trial.trial_id}
            | self.tracker.provenance_tags(),
        )
        if created:
            config = self.plan.config(cell)
            self.tracker.log(run_id, params=flatten(config.to_dict()))
            self.tracker.client.log_text(
                run_id, json.dumps(config.to_dict(), indent=2), "config.json"
            )
        return run_id, created

    def finish_trial(self, trial: Trial, status: str, mlflow_status: str) -> None:
        run_id = self.run_id(trial)
        self.tracker.flush(run_id)
        epochs = trial_status(trial.last_result)[1]
        now = int(time.time() * 1000)
        self.tracker.log(
            run_id,
            metrics=[Metric("fidelity/epochs", float(epochs), now, epochs)],
            tags={TAG_STATUS: status, TAG_EPOCHS: str(epochs)},
        )
        self.tracker.finish(run_id, mlflow_status)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        unfinished = len(trials) < len(self.plan.cells) or any(
            t.status not in (Trial.TERMINATED, Trial.ERROR) for t in trials
        )
        by_cell = {t.config["cell"]: t for t in trials}
        for study_run in self.study_runs.values():
            for run in self.tracker.children(study_run):
                if run.info.status != "RUNNING":
                    continue
                trial = by_cell.get(run.data.tags.get(TAG_CELL, ""))
                if trial is not None and trial.status == Trial.ERROR:
                    self.on_trial_error(0, trials, trial)
                    continue
                self.mark_interrupted(run.info.run_id, trial)
            if unfinished:
                self.tracker.log(
                    study_run, tags={TAG_STATUS: "interrupted (continue with --resume)"}
                )
                self.tracker.finish(study_run, "KILLED")
        if unfinished and self.top_run is not None:
            self.tracker.finish(self.top_run, "KILLED")
