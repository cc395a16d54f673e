"""Our thin MLflow layer: a Ray Tune `Callback` that runs in the driver (the only writer).

Ray's `MLflowLoggerCallback` makes flat runs and Optuna's `MLflowCallback` never fires under Ray,
so this module writes the structure itself with `MlflowClient`:

    search run (only with several splits)     tags neuron.role=search
      └─ study run, one per split               tags neuron.role=study, summary artifacts
           └─ trial run, one per Tune trial     tags neuron.role=trial, neuron.trial_id

Runs are found again by tags (`neuron.search`, `neuron.role`, `neuron.split`,
`neuron.trial_id`), so a restored search re-attaches to the same runs instead of creating new
ones, and every child still RUNNING when a study ends is terminated with its real status. Each
Tune result is one `log_batch` request (step = epoch); params are the flattened resolved config
(`model.spatial_prototypes`, ...) plus the Optuna parameters (`search.train.optimizer.lr`, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric, Param, RunTag, ViewType
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.result import AUTO_RESULT_KEYS

import neuron
from neuron.config import ConfigError, config_from_plain, dump_yaml
from neuron.prepare import augmentation_settings
from search.spec import check_tracking_uri_form

PARENT_RUN_ID = "mlflow.parentRunId"
TAG_SEARCH = "neuron.search"
TAG_ROLE = "neuron.role"
TAG_SPLIT = "neuron.split"
TAG_STUDY = "neuron.study"
TAG_TRIAL = "neuron.trial_id"
TAG_STATUS = "neuron.status"
TAG_EPOCHS = "neuron.epochs_reached"
DIVERGED = "diverged"
"""Result key of a trial whose loss stopped being finite: the reason (search.trainable)."""
TAG_NOTE = "mlflow.note.content"
"""The run's description: the MLflow UI shows it (Markdown) at the top of the run page."""
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3's UI opens an experiment in GenAI mode unless this tag says it holds model training."""
TAG_COMPARE_URL = "neuron.compare_url"
TAG_TRIALS_URL = "neuron.trials_url"
TAG_SHARED_VIEW = "mlflow.sharedViewState."
"""Prefix of the experiment tags holding saved views of the runs table (MLflow UI `Share`)."""
BATCH = 100
"""MLflow's limit of params or tags per log_batch request."""
LOCAL_UI = "http://127.0.0.1:5000"
"""Where `mlflow ui --port 5000` serves a local (SQLite) store."""
KEY_PARAMETERS = (
    ("lr", "lr"),
    ("logit_scale", "scale"),
    ("spatial_prototypes", "Ks"),
    ("temporal_prototypes", "Kt"),
    ("weight_decay", "wd"),
    ("epochs", "epochs"),
)
"""Searched parameters named in a trial's run name (by the last part of their dotted key), in
order, with their short label; the first three a study searches are shown."""


class TrackingError(ValueError):
    """The MLflow tracking store cannot be used; the message says why and how to fix it."""


# --------------------------------------------------------------------------------------------
# Checks before launching


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any trial starts, when the tracking store cannot be written."""
    try:
        check_tracking_uri_form(uri, "tracking URI")
    except ConfigError as error:
        raise TrackingError(str(error)) from error
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        if str(path) in ("", ":memory:"):
            raise TrackingError(
                f"tracking URI {uri!r}: an in-memory store is lost when the search ends; "
                "use sqlite:///<path>/mlflow.db"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrackingError(
                f"tracking URI {uri!r}: cannot create the folder {path.parent} ({error.strerror}); "
                "choose a writable location, e.g. sqlite:///runs/search/mlflow.db"
            ) from error
        target = path if path.exists() else path.parent
        if not os.access(target, os.W_OK):
            raise TrackingError(
                f"tracking URI {uri!r}: {target} is not writable; fix its permissions or choose "
                "another path, e.g. sqlite:///runs/search/mlflow.db"
            )
    elif scheme in ("http", "https"):
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=timeout_s) as response:
                answer = response.read(64).decode(errors="replace").strip()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise TrackingError(
                f"tracking URI {uri!r}: no MLflow server answers at {health} ({reason}); start one "
                "(mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
                "sqlite:///mlflow.db --workers 1) or pass the right --tracking-uri"
            ) from error
        if answer.upper() != "OK":
            raise TrackingError(
                f"tracking URI {uri!r}: {health} answered {answer!r}, not OK; is it an MLflow server?"
            )
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:
        raise TrackingError(
            f"tracking URI {uri!r}: MLflow cannot use this store: {error}"
        ) from error


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the git checkout holding `path` (this package by default), if any."""
    folder = path or Path(__file__).resolve().parent
    try:
        completed = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip() or None


# --------------------------------------------------------------------------------------------
# What a study is


@dataclasses.dataclass(frozen=True)
class StudyInfo:
    """Everything the tracking layer records about one study (one split of a search)."""

    search_name: str
    split: str
    dataset: str
    class_names: tuple[str, ...]
    training_classes: tuple[int, ...]
    validation_classes: tuple[int, ...]
    unseen_classes: tuple[int, ...]
    objective: str
    mode: str
    base_config: dict[str, Any]
    """The study's base config (plain); a trial's config is it plus the trial's overrides."""
    optuna_storage: str
    output_dir: str
    """Local folder for the study's summary files (best config, results tables, plots)."""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Search settings logged as params of the study run (num_trials, scheduler, ...)."""
    time_budget_s: float | None = None
    """The study's time budget: ending there is a normal end, not an interruption."""
    text_provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The text encoder that actually produced the side-information embeddings: `text_encoder`,
    `text_dim`, `text_embedding_sha256` (from `Prepared.describe()`)."""

    @property
    def study_name(self) -> str:
        return f"{self.search_name}/{self.split}"

    def trial_config_yaml(self, overrides: dict[str, Any]) -> str:
        return dump_yaml(config_from_plain(self.base_config).replace(overrides))

    def data_tags(self, overrides: dict[str, Any] | None = None) -> dict[str, str]:
        """Provenance of the inputs: the text encoder that produced the embeddings (not the
        configured `text_model`, which the official tensors ignore) and the augmentation of the
        run's config (the study's base, or a trial's with its overrides)."""
        cfg = config_from_plain(self.base_config).replace(overrides or {})
        tags = {f"neuron.{key}": str(value) for key, value in self.text_provenance.items()}
        augmentation = augmentation_settings(cfg)
        tags["neuron.augmentation"] = json.dumps(augmentation, sort_keys=True)
        tags |= {f"neuron.augmentation.{key}": str(value) for key, value in augmentation.items()}
        return tags

    def class_tags(self) -> dict[str, str]:
        names = self.class_names

        def named(ids: tuple[int, ...]) -> str:
            return json.dumps([names[i] for i in ids])

        return {
            "neuron.dataset": self.dataset,
            TAG_SPLIT: self.split,
            "neuron.seen_classes": json.dumps(
                list(self.training_classes + self.validation_classes)
            ),
            "neuron.training_classes": json.dumps(list(self.training_classes)),
            "neuron.validation_classes": json.dumps(list(self.validation_classes)),
            "neuron.unseen_classes": json.dumps(list(self.unseen_classes)),
            "neuron.seen_class_names": named(self.training_classes + self.validation_classes),
            "neuron.unseen_class_names": named(self.unseen_classes),
            "neuron.validation_class_names": named(self.validation_classes),
        }


def flatten(plain: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → {"model.spatial_prototypes": "80", ...} (lists as JSON)."""
    flat: dict[str, str] = {}
    for key, value in plain.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = (
                json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            )
    return flat


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)


def trial_number(trial: Trial) -> str:
    """Tune's running number of a trial in its study (the head of its experiment tag,
    `7_lr=0.03,...` → `7`), else its trial id."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return head if head.isdigit() else trial.trial_id


def trial_run_name(
    study_name: str,
    number: str,
    overrides: dict[str, Any],
    objective: tuple[str, float] | None = None,
) -> str:
    """What a trial's run is, readable in the runs table even when cut short: its number, its
    objective once known, its key hyperparameters, then its study, e.g.
    `trial 7 · zsl_top1 0.512 · lr 0.031 · scale 12.5 · Ks 40 · quick/synthetic_default`."""
    parts = [f"trial {number}"]
    if objective is not None and not math.isnan(objective[1]):
        parts.append(f"{objective[0].rsplit('/', 1)[-1]} {objective[1]:.3f}")
    by_name = {key.rsplit(".", 1)[-1]: value for key, value in overrides.items()}
    labelled = [(label, by_name[name]) for name, label in KEY_PARAMETERS if name in by_name]
    parts += [f"{label} {_short(value)}" for label, value in labelled[:3]]
    parts.append(study_name)
    return " · ".join(parts)


def trial_status(result: dict[str, Any] | None) -> tuple[str, int]:
    """("completed" | "stopped early at epoch k", epochs reached) from a trial's last result:
    `fit` puts the final test evaluation (`best_epoch`) on its last report only."""
    result = result or {}
    epoch = int(result.get("epoch", result.get("training_iteration", 0)) or 0)
    if result.get(DIVERGED):
        return f"failed: {result[DIVERGED]}", epoch
    if "best_epoch" in result:
        return "completed", epoch
    return f"stopped early at epoch {epoch}", epoch


def error_reason(error_text: str) -> str:
    """The innermost exception line of a trial's error text, without the module path, e.g.
    `DivergenceError: epoch 2: the stage-2 loss is nan ...`."""
    lines = [line.strip() for line in error_text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        name, _, message = line.partition(":")
        short = name.rsplit(".", 1)[-1]
        if message and " " not in name and short.endswith(("Error", "Exception")):
            return f"{short}:{message}"[:500]
    return lines[-1][:500] if lines else "unknown error"


def ui_url(tracking_uri: str) -> str:
    """The MLflow UI of a store: the tracking server itself, or `mlflow ui` on port 5000."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return LOCAL_UI


def runs_page_url(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs table, in the UI's model-training view."""
    return (
        f"{ui_url(tracking_uri)}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    )


def compare_url(tracking_uri: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's compare view of `run_ids` (params, metrics and plots side by side)."""

    def encoded(values: list[str]) -> str:
        return urllib.parse.quote(json.dumps(values, separators=(",", ":")), safe=",")

    return (
        f"{ui_url(tracking_uri)}/#/compare-runs?runs={encoded(run_ids)}"
        f"&experiments={encoded([experiment_id])}"
    )


# --------------------------------------------------------------------------------------------
# The MLflow writer


class MlflowTracker:
    """Creates and finds the search/study/trial runs. Picklable (the client is made lazily)."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client: mlflow.MlflowClient | None = None
        self._experiment_id: str | None = None
        self._pending: dict[str, list[Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_client": None, "_pending": {}}

    @property
    def client(self) -> mlflow.MlflowClient:
        if self._client is None:
            self._client = mlflow.MlflowClient(self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                self._experiment_id = self.client.create_experiment(
                    self.experiment,
                    artifact_location=self._artifact_location(),
                    tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND},
                )
            else:
                self._experiment_id = found.experiment_id
                if found.tags.get(TAG_EXPERIMENT_KIND) is None:
                    self.client.set_experiment_tag(
                        found.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND
                    )
        return self._experiment_id

    def compare_url(self, run_ids: list[str]) -> str:
        return compare_url(self.tracking_uri, self.experiment_id, run_ids)

    def share_trials_view(self, study: StudyInfo, params: list[str]) -> str:
        """A saved view of the runs table (an experiment tag the UI reads through the page's
        `viewStateShareKey`): the study's trials, best first, with the objective, the status,
        the searched `params` and the unseen-test ZSL as columns. Returns its page."""
        key = "neuron-" + hashlib.sha256(study.study_name.encode()).hexdigest()[:16]
        columns = ["metrics.`objective`", f"tags.`{TAG_STATUS}`"]
        columns += [f"params.`{name}`" for name in params]
        columns += ["metrics.`fidelity/epochs`", "metrics.`test/zsl_top1`"]
        state = {
            "searchFilter": f"tags.`{TAG_STUDY}` = '{study.study_name}' and "
            f"tags.`{TAG_ROLE}` = 'trial'",
            "orderByKey": "metrics.`objective`",
            "orderByAsc": study.mode == "min",
            "selectedColumns": columns,
        }
        self.client.set_experiment_tag(
            self.experiment_id, TAG_SHARED_VIEW + key, json.dumps(state, separators=(",", ":"))
        )
        return (
            f"{ui_url(self.tracking_uri)}/#/experiments/{self.experiment_id}/runs"
            f"?viewStateShareKey={key}&workflowType=machine_learning"
        )

    def _artifact_location(self) -> str | None:
        """Beside a SQLite store (MLflow would use ./mlruns of the current folder); a tracking
        server chooses its own."""
        if self.tracking_uri.startswith("sqlite:///"):
            return (
                Path(self.tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
            ).as_uri()
        return None

    def find_run(self, tags: dict[str, str]) -> mlflow.entities.Run | None:
        """The oldest active run carrying all `tags`."""
        query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=query,
            run_view_type=ViewType.ACTIVE_ONLY,
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def children(self, parent_run_id: str) -> list[mlflow.entities.Run]:
        runs: list[mlflow.entities.Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{PARENT_RUN_ID}` = '{parent_run_id}'",
                run_view_type=ViewType.ACTIVE_ONLY,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def ensure_run(
        self, key_tags: dict[str, str], name: str, parent_run_id: str | None, tags: dict[str, str]
    ) -> tuple[str, bool]:
        """(run id, created): the run carrying `key_tags`, re-opened, or a new one."""
        found = self.find_run(key_tags)
        if found is not None:
            if found.info.status != "RUNNING":
                self.client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id, False
        all_tags = dict(key_tags) | tags
        if parent_run_id is not None:
            all_tags[PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
        return run.info.run_id, True

    def log(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        background: bool = False,
    ) -> None:
        """One log_batch request (more only past MLflow's 100 params/tags per request).

        `background`: queued on MLflow's async logging thread, so a Tune result is not held up by
        the store's commit (every trial waits for the driver to process its last report before
        it continues); `flush(run_id)` waits for the queue.
        """
        param_list = [Param(k, v[:6000]) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, v[:8000]) for k, v in (tags or {}).items()]
        metric_list = list(metrics)
        while True:
            operations = self.client.log_batch(
                run_id,
                metrics=metric_list[:1000],
                params=param_list[:BATCH],
                tags=tag_list[:BATCH],
                synchronous=not background,
            )
            if background:
                self._pending.setdefault(run_id, []).append(operations)
            metric_list, param_list, tag_list = (
                metric_list[1000:],
                param_list[BATCH:],
                tag_list[BATCH:],
            )
            if not (metric_list or param_list or tag_list):
                return

    def flush(self, run_id: str) -> None:
        """Wait until the background requests of `run_id` are in the store."""
        for operations in self._pending.pop(run_id, []):
            operations.wait()

    def provenance_tags(self) -> dict[str, str]:
        tags = {"neuron.version": neuron.__version__}
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        return tags

    def start_search(self, name: str, splits: tuple[str, ...], settings: dict[str, Any]) -> str:
        """The top parent of a multi-split search."""
        run_id, created = self.ensure_run(
            {TAG_SEARCH: name, TAG_ROLE: "search"},
            name,
            None,
            self.provenance_tags() | {"neuron.splits": json.dumps(list(splits))},
        )
        if created:
            self.log(run_id, params=flatten(settings, "search."))
        return run_id

    def start_study(self, study: StudyInfo, parent_run_id: str | None) -> str:
        """The parent run of one study (one split)."""
        run_id, created = self.ensure_run(
            {TAG_SEARCH: study.search_name, TAG_ROLE: "study", TAG_SPLIT: study.split},
            study.study_name,
            parent_run_id,
            self.provenance_tags()
            | study.class_tags()
            | study.data_tags()
            | {
                TAG_STUDY: study.study_name,
                "neuron.objective": f"{study.mode} {study.objective}",
                "neuron.optuna_storage": study.optuna_storage,
                TAG_NOTE: f"Search study **{study.study_name}** is running: objective "
                f"{study.mode} `{study.objective}` (validation, pseudo-unseen classes); one child "
                "run per trial. The results table appears here when the study ends.",
            },
        )
        if created:
            self.log(
                run_id,
                params=flatten(study.settings, "search.") | flatten(study.base_config, "base."),
            )
            self.client.log_text(
                run_id, dump_yaml(config_from_plain(study.base_config)), "base_config.yaml"
            )
        return run_id

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.flush(run_id)
        self.client.set_terminated(run_id, status=status)


# --------------------------------------------------------------------------------------------
# The Tune callback


def _error_text(trial: Trial) -> str:
    """The trial's error text: the driver's local copy (written before the callbacks run) or,
    after a restore, the one synced to the storage path."""
    local = trial.error_file
    if local and Path(local).is_file():
        return Path(local).read_text(errors="replace")
    return str(trial.get_error() or "")


def _metrics_of(result: dict[str, Any], step: int) -> list[Metric]:
    timestamp = int(float(result.get("timestamp", time.time())) * 1000)
    return [
        Metric(key, float(value), timestamp, step)
        for key, value in result.items()
        if key not in AUTO_RESULT_KEYS
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    ]


class TrialRunsCallback(Callback):
    """One MLflow child run per Tune trial, written from the driver and found again after a
    restart: per-epoch metrics (an epoch replayed after a restore is logged once), recoveries,
    and the end of each trial (`finish_trial`). Subclasses say how a trial's run is found or
    created (`open_run`) and what its end records."""

    def __init__(self, tracker: MlflowTracker) -> None:
        self.tracker = tracker
        self._runs: dict[str, str] = {}
        self._logged_steps: dict[str, set[int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_runs": {}, "_logged_steps": {}}

    def open_run(self, trial: Trial) -> tuple[str, bool]:
        """(run id, created): the trial's run, found by its tags or created with its params."""
        raise NotImplementedError

    def finish_trial(self, trial: Trial, status: str, mlflow_status: str) -> None:
        """Record how the trial ended (status tag, fidelity reached, ...) and end its run."""
        raise NotImplementedError

    def run_id(self, trial: Trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        run_id, created = self.open_run(trial)
        if created:
            self._logged_steps[trial.trial_id] = set()
        else:
            self.tracker.log(run_id, tags={TAG_STATUS: "running"})
            history = self.tracker.client.get_metric_history(run_id, "epoch")
            self._logged_steps[trial.trial_id] = {m.step for m in history}
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.run_id(trial)

    def on_trial_restore(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.tracker.log(self.run_id(trial), tags={TAG_STATUS: "running"})

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.tracker.log(
            self.run_id(trial),
            tags={
                TAG_STATUS: "running",
                "neuron.recoveries": str(trial.num_failures),
                "neuron.last_recovered_error": error_reason(_error_text(trial)),
            },
        )

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        run_id = self.run_id(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step in self._logged_steps[trial.trial_id]:
            return  # replayed after a restore: this epoch is already recorded
        self._logged_steps[trial.trial_id].add(step)
        self.tracker.log(run_id, metrics=_metrics_of(result, step), background=True)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        status = trial_status(trial.last_result)[0]
        # A diverged trial ends normally under Tune (no retry) but is a failed run.
        self.finish_trial(trial, status, "FAILED" if status.startswith("failed") else "FINISHED")

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.finish_trial(trial, f"failed: {error_reason(_error_text(trial))}", "FAILED")

    def mark_interrupted(self, run_id: str, trial: Trial | None) -> None:
        """A run left RUNNING when Tune stopped: KILLED, with a status that says how to go on."""
        epochs = trial_status(trial.last_result if trial else None)[1]
        self.tracker.log(
            run_id,
            tags={
                TAG_STATUS: f"interrupted at epoch {epochs} (continue with --resume)",
                TAG_EPOCHS: str(epochs),
            },
        )
        self.tracker.finish(run_id, "KILLED")


class TrackingCallback(TrialRunsCallback):
    """Records one study in MLflow from the Tune driver: a child run per trial, one log_batch per
    result, statuses at the end, and the study summary on the parent run."""

    def __init__(self, tracker: MlflowTracker, study: StudyInfo, study_run_id: str) -> None:
        super().__init__(tracker)
        self.study = study
        self.study_run_id = study_run_id

    # One child run per trial, found again by its trial id after a restart.
    def open_run(self, trial: Trial) -> tuple[str, bool]:
        overrides = dict(trial.config.get("overrides", {}))
        run_id, created = self.tracker.ensure_run(
            {TAG_STUDY: self.study.study_name, TAG_TRIAL: trial.trial_id},
            trial_run_name(self.study.study_name, trial_number(trial), overrides),
            self.study_run_id,
            {TAG_SEARCH: self.study.search_name, TAG_ROLE: "trial", TAG_STATUS: "running"}
            | self.tracker.provenance_tags()
            | self.study.class_tags()
            | self.study.data_tags(overrides),
        )
        config_yaml = self.study.trial_config_yaml(overrides)
        # Params are re-logged on re-attach too: same values, so MLflow accepts them, and a
        # driver killed between create_run and the params leaves no run without params.
        search_params = {f"search.{k}": str(v) for k, v in trial.config.items() if k != "overrides"}
        self.tracker.log(run_id, params=flatten(yaml.safe_load(config_yaml)) | search_params)
        if created:
            self.tracker.client.log_text(run_id, config_yaml, "config.yaml")
        return run_id, created

    def finish_trial(self, trial: Trial, status: str, mlflow_status: str) -> None:
        """Status tag, fidelity reached and objective, then terminate the trial's run."""
        run_id = self.run_id(trial)
        self.tracker.flush(run_id)
        result = trial.last_result or {}
        _, epochs = trial_status(result)
        # A completed trial's objective is the one at the epoch fit selected; a stopped one's
        # is the best it reached.
        objective = result.get(f"selected/{self.study.objective}")
        if objective is None:
            objective = self._best_objective(run_id)
        now = int(time.time() * 1000)
        metrics = [Metric("fidelity/epochs", float(epochs), now, epochs)]
        tags = {TAG_STATUS: status, TAG_EPOCHS: str(epochs)}
        if objective is not None:
            metrics.append(Metric("objective", float(objective), now, epochs))
            # The run name carries the objective: the runs table shows it with no column picked.
            tags["mlflow.runName"] = trial_run_name(
                self.study.study_name,
                trial_number(trial),
                dict(trial.config.get("overrides", {})),
                (self.study.objective, float(objective)),
            )
        self.tracker.log(run_id, metrics=metrics, tags=tags)
        self.tracker.finish(run_id, mlflow_status)

    def _best_objective(self, run_id: str) -> float | None:
        """The best per-epoch value of the objective (the value at the epoch `fit` selects)."""
        values = [
            m.value
            for m in self.tracker.client.get_metric_history(run_id, self.study.objective)
            if not math.isnan(m.value)
        ]
        if not values:
            return None
        return max(values) if self.study.mode == "max" else min(values)

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        self._started = time.monotonic()
        self._expected_trials = total_num_samples

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        if self.interrupted(trials):
            self.suspend_study(trials)
        else:
            self.close_study(trials)

    def interrupted(self, trials: list[Trial]) -> bool:
        """Tune stopped before every trial finished (Ctrl-C, SIGUSR1), not at the time budget."""
        expected = getattr(self, "_expected_trials", None)
        if expected is not None:
            # Trials a killed driver finished after Tune's last saved state count toward the
            # study (the searcher counts them too; search.runner.NeuronOptunaSearch.suggest).
            known = {trial.trial_id for trial in trials}
            expected -= sum(
                1
                for run in self.tracker.children(self.study_run_id)
                if run.data.tags.get(TAG_TRIAL) not in known
                and run.info.status in ("FINISHED", "FAILED")
            )
        unfinished = (expected is not None and len(trials) < expected) or any(
            trial.status not in (Trial.TERMINATED, Trial.ERROR) for trial in trials
        )
        budget = self.study.time_budget_s
        elapsed = time.monotonic() - getattr(self, "_started", time.monotonic())
        return unfinished and not (budget is not None and elapsed >= 0.95 * budget)

    def suspend_study(self, trials: list[Trial]) -> None:
        """An interrupted study: its running trials and the study run are KILLED with a status
        that says how to continue; `--resume` re-opens the same runs."""
        by_id = {trial.trial_id: trial for trial in trials}
        for run in self.tracker.children(self.study_run_id):
            trial = by_id.get(run.data.tags.get(TAG_TRIAL, ""))
            if run.info.status != "RUNNING" or trial is None:
                continue
            self.mark_interrupted(run.info.run_id, trial)
        self.tracker.log(
            self.study_run_id, tags={TAG_STATUS: "interrupted (continue with --resume)"}
        )
        self.tracker.finish(self.study_run_id, "KILLED")

    # The end of a study: no RUNNING child left, summary artifacts on the parent.
    def close_study(self, trials: list[Trial]) -> None:
        by_id = {trial.trial_id: trial for trial in trials}
        for run in self.tracker.children(self.study_run_id):
            if run.info.status != "RUNNING":
                continue
            trial = by_id.get(run.data.tags.get(TAG_TRIAL, ""))
            if trial is None:
                self.tracker.log(
                    run.info.run_id, tags={TAG_STATUS: "lost: not in the restored Tune run"}
                )
                self.tracker.finish(run.info.run_id, "KILLED")
            elif trial.status == Trial.ERROR:
                self.on_trial_error(0, trials, trial)
            else:
                status = trial_status(trial.last_result)[0]
                if status.startswith("failed"):
                    self.finish_trial(trial, status, "FAILED")
                    continue
                if status != "completed" and trial.status != Trial.TERMINATED:
                    status += " (the study ended: time budget or interrupted)"
                self.finish_trial(trial, status, "FINISHED")
        # The report stage reads the runs this module wrote (imported here: it imports us).
        from search.report import summarise_study

        summarise_study(self.tracker, self.study, self.study_run_id, trials)
