"""Run a search: Ray Tune schedules Neuron trials, Optuna proposes them, MLflow records them.

`run_search(spec, name)` runs one study per split, one after the other:

1. `check_tracking_uri`, the search name (taken? resumable?), then `ray.init` (the cluster at
   `address` / $RAY_ADDRESS, else a local instance) — bad input fails before anything starts.
2. `prepare(cfg)` once in the driver: dataset, text embeddings, stage-1 encoder and the
   memory-mapped feature cache are built (or found) in `run.cache_dir`; trials receive their
   paths (`Prepared`), never copies, so concurrent trials on a node share one page-cached copy.
   Every trial runs with `run.threads` = CPUs per trial, and the objective also selects the
   epoch (`eval.selection_metric`, when it is `val/zsl_top1` or `val/gzsl_h`).
3. A `Tuner` over `train_trial` with `OptunaSearch` (TPE or random, seeded: `sampler`; define-by-run
   `search.space.define_space`, study persisted in `<output_dir>/<name>/optuna.db` so
   `optuna-dashboard` can open it and `--resume` continues it), ASHA / no scheduler /
   HyperBandForBOHB, `max_concurrent_trials`, `reuse_actors=True`, per-epoch checkpoints under
   `<storage_path>/<name>/<split>` (2 kept, and repaired after a driver crash, by
   `search.checkpoints.CheckpointKeeper`) and `FailureConfig(max_failures)`: a trial whose node
   dies resumes from its last checkpoint elsewhere. Schedulers count fidelity in `epoch` and
   compare trials on `ranking_metric` (the objective of the epoch each has selected so far).
4. `TrackingCallback` writes the MLflow runs from the driver (search.tracking).

Trials stopped early by ASHA and TPE. Ray's `OptunaSearch` tells Optuna the LAST result of a
trial stopped by the scheduler as a COMPLETE value, as if a 1-epoch score were a finished run,
and tells an errored trial that reported epochs COMPLETE too. `NeuronOptunaSearch` changes that:

- a trial stopped early is told PRUNED, with the objective of the epoch it had selected so far
  (`selected/<objective>`, else its last objective) as the intermediate value at the epoch it
  reached. Optuna's TPE ranks pruned trials below every completed one (deeper first,
  then by that value), so a stopped configuration still marks a bad region for TPE without being
  mistaken for a finished score;
- a failed trial (e.g. diverged) is told FAIL, which TPE ignores;
- a completed trial is told the objective at the epoch `fit` selected (`selected/<objective>`),
  not at its last epoch.

The fidelity reached is recorded in Optuna (user attributes `epochs_reached`, `status`) and in
MLflow (tags `neuron.status` = "stopped early at epoch k", `neuron.epochs_reached`, metric
`fidelity/epochs`). Optuna gets one intermediate value per trial, written when the trial ends
(one SQLite write per epoch would hold up every trial, which waits for the driver to process its
last report); the per-epoch curves are in MLflow.

`HyperBandForBOHB` runs with Optuna TPE as its model (TuneBOHB needs hpbandster and ConfigSpace,
not installed). It pauses trials, so Tune's concurrency limiter (which counts paused trials)
would stall its brackets: with it, `max_concurrent_trials` only bounds pending trials and the
cluster's resources bound running ones.

Resume (`resume=True`): each split's Tune run is restored with `Tuner.restore` (unfinished trials
continue from their checkpoints, errored ones stay errored); the restored run carries the same
searcher (same Optuna study) and the same tracking callback, which finds the same MLflow runs by
their tags. Splits not started yet are started; finished ones are summarised again. Ctrl-C
stops Tune cleanly: running trials and the study run are marked KILLED ("interrupted ...
continue with --resume") and `SearchInterrupted` is raised (`neuron search` exits with 130).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import importlib.util
import json
import os
import sys
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
import yaml
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandForBOHB, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from neuron.atomic import write_text_atomic
from neuron.cli import check_name, program
from neuron.config import Config, EvalConfig, to_plain
from neuron.device import host_allocator_environment
from neuron.prepare import Prepared
from neuron.train import reported_metric_names
from search.checkpoints import CheckpointKeeper
from search.lock import hold_name
from search.space import SpaceRanges, define_space, max_epochs
from search.spec import ResourcesSpec, SamplerSpec, SearchSpec
from search.staging import PendingPrepared, StagedPrepared, launch_prepare, localize
from search.tracking import (
    TAG_COMPARE_URL,
    TAG_SEARCH,
    TAG_TRIALS_URL,
    MlflowTracker,
    StudyInfo,
    TrackingCallback,
    check_tracking_uri,
    flatten,
    runs_page_url,
    trial_status,
)
from search.trainable import train_trial

TABLE_PARAMETERS = (
    "train.optimizer.lr",
    "train.optimizer.weight_decay",
    "model.logit_scale",
    "model.steps",
    "model.spatial_prototypes",
    "model.temporal_prototypes",
)
"""Parameter columns of the live trial table: never conditional (CLIReporter needs every column
in every trial's config), and few enough to keep the table readable."""


class TrialTable(tune.CLIReporter):
    """Tune's live trial table, finished trials sorted by the objective. Tune's sort compares
    None with numbers when a trial ended before its first report (a spent `time_budget_s`), so
    the table is left unsorted while such a trial exists. Uses CLIReporter's private
    `_sort_by_metric` and `_metric` (tests/search/test_ray_internals.py guards them)."""

    def report(self, trials: list[Trial], done: bool, *sys_info: str) -> None:
        self._sort_by_metric = all(
            (trial.last_result or {}).get(self._metric) is not None
            for trial in trials
            if trial.status == Trial.TERMINATED
        )
        super().report(trials, done, *sys_info)


class SearchSetupError(ValueError):
    """The search cannot start (name taken, nothing to resume, spec changed on resume)."""


class SearchInterrupted(RuntimeError):
    """Tune stopped before the study finished (Ctrl-C); the message says how to continue."""


# --------------------------------------------------------------------------------------------
# Optuna through Tune


def suggest(trial: optuna.Trial, ranges: SpaceRanges, base: Config) -> dict[str, Any]:
    """The define-by-run function handed to OptunaSearch: Tune's trial config becomes the
    Optuna parameters (captured by Ray) plus `overrides`, the dotted Config overrides."""
    return {"overrides": define_space(trial, ranges, base)}


class NeuronOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about stopped and failed trials (module
    docstring): PRUNED for trials stopped early, FAIL for errors, the selected epoch's objective
    for completed trials."""

    def __init__(self, *args: Any, num_trials: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_result: dict[str, tuple[int, float]] = {}
        self._num_trials = num_trials

    def suggest(self, trial_id: str) -> dict | None:
        """Propose a trial, or FINISHED once the study holds `num_trials` trials.

        Tune restores its trial count from its last saved state; a trial that a killed driver
        started after that state (asked Optuna, perhaps finished) is unknown to it, so Tune
        would start one more. Counted here instead: a finished one counts toward `num_trials`;
        one still RUNNING was lost with its driver (told FAIL, status "lost ..."), and Tune
        replaces it. (No other driver can be running: search.lock.)"""
        if self._num_trials is None or trial_id in self._ot_trials:
            return super().suggest(trial_id)
        study = self._ot_study
        assert study is not None, "suggest() before the study was set up"
        known = {trial.number for trial in self._ot_trials.values()}
        finished_elsewhere = 0
        for trial in study.get_trials(deepcopy=False):
            if trial.number in known:
                continue
            if trial.state == optuna.trial.TrialState.RUNNING:
                lost = optuna.trial.Trial(study, trial._trial_id)
                lost.set_user_attr(
                    "status", "lost: asked by a driver that died before Tune saved it"
                )
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            elif "status" in trial.user_attrs and not trial.user_attrs["status"].startswith("lost"):
                finished_elsewhere += 1
        if len(known) + finished_elsewhere >= self._num_trials:
            return Searcher.FINISHED  # Tune's own sentinel
        return super().suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Only the last (epoch, objective) is kept, in memory and in the searcher's checkpoint,
        # and written when the trial ends: TPE ranks a pruned trial by its last intermediate
        # value and depth only, and one SQLite write per epoch would hold up every trial (each
        # waits for the driver to process its last report). The full curves are in MLflow.
        self._last_result[trial_id] = self._intermediate(result)

    def _intermediate(self, result: dict) -> tuple[int, float]:
        """(epoch, the best objective so far): the selection's value when the objective selects
        the epoch, what the trial would return if stopped now."""
        value = result.get(f"selected/{self.metric}", result[self.metric])
        return int(result.get("epoch", result["training_iteration"])), float(value)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        # A killed driver may have told Optuna how this trial ended after its last saved
        # experiment state; the restored trial then ends again. The first answer stands.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self._tell(trial_id, result, error)
        self._completed_trials.add(trial_id)

    def _tell(self, trial_id: str, result: dict | None, error: bool) -> None:
        ot_trial = self._ot_trials[trial_id]
        status, epochs = trial_status(result)
        # Tune does not pass the result that made the scheduler stop a trial to
        # on_trial_result; the trial's last result comes here.
        last = self._last_result.pop(trial_id, None)
        if result and self.metric in result:
            last = self._intermediate(result)
        if last is not None and not status.startswith("failed"):
            step, reported = last
            ot_trial.report(reported, step)
        ot_trial.set_user_attr("ray_trial_id", trial_id)
        ot_trial.set_user_attr("epochs_reached", epochs)
        value: float | None = None
        if error:
            state, status = optuna.trial.TrialState.FAIL, "failed"
        elif status.startswith("failed"):  # diverged (search.trainable)
            state = optuna.trial.TrialState.FAIL
        elif status == "completed":
            state = optuna.trial.TrialState.COMPLETE
            finished = result or {}
            value = finished.get(f"selected/{self.metric}", finished.get(self.metric))
        else:
            state = optuna.trial.TrialState.PRUNED
        ot_trial.set_user_attr("status", status)
        assert self._ot_study is not None, "Ray's OptunaSearch creates the study in its setup"
        self._ot_study.tell(ot_trial, value, state=state)

    # HyperBandForBOHB pauses and resumes trials through these (TuneBOHB-specific hooks); TPE
    # needs no bookkeeping for them.
    def on_pause(self, trial_id: str) -> None:
        return None

    def on_unpause(self, trial_id: str) -> None:
        return None


def trial_dirname(trial: tune.experiment.Trial) -> str:
    return f"trial_{trial.trial_id}"


def make_sampler(spec: SamplerSpec, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of `spec`, seeded with the search seed."""
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if not spec.multivariate:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup_trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=spec.startup_trials, multivariate=True, group=True
        )


def ranking_metric(spec: SearchSpec) -> str:
    """What schedulers compare trials on: the objective of the epoch the trial has selected so
    far (`selected/<objective>`, what it would return if stopped now, as a completed trial
    returns its selected epoch), when the objective selects the epoch (`study_base`); otherwise
    the objective at the rung's epoch. Validation curves swing from epoch to epoch before the
    learning rate drops, and a trial stopped on one low epoch would lose its best one."""
    if spec.objective.metric in _selectable_metrics():
        return f"selected/{spec.objective.metric}"
    return spec.objective.metric


def _selectable_metrics() -> tuple[str, ...]:
    return typing.get_args(typing.get_type_hints(EvalConfig)["selection_metric"])


def make_scheduler(spec: SearchSpec, epochs: int) -> TrialScheduler:
    """ASHA, HyperBandForBOHB or none; the fidelity is the epoch, the comparison
    `ranking_metric`."""
    metric, mode = ranking_metric(spec), spec.objective.mode
    match spec.scheduler.name:
        case "asha":
            return ASHAScheduler(
                time_attr="epoch",
                metric=metric,
                mode=mode,
                max_t=epochs,
                grace_period=spec.scheduler.grace_period,
                reduction_factor=spec.scheduler.reduction_factor,
            )
        case "hyperband_bohb":
            return HyperBandForBOHB(
                time_attr="epoch",
                metric=metric,
                mode=mode,
                max_t=epochs,
                reduction_factor=spec.scheduler.reduction_factor,
            )
        case "none":
            return FIFOScheduler()
    raise AssertionError(spec.scheduler.name)


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class StudyResult:
    split: str
    study_run_id: str
    best_trial_id: str | None
    best_objective: float | None
    best_config_path: Path | None
    results_path: Path
    counts: dict[str, int]
    compare_url: str | None = None
    """MLflow's compare view of the study's trials (best first)."""
    trials_url: str | None = None
    """The runs table of the study's trials, best first, objective and parameters as columns."""
    plots_note: str | None = None
    """Why a summary plot is missing (parameter importances with < 2 completed trials)."""
    confirm_path: Path | None = None
    """The ablation spec that trains the best trials again with new seeds
    (`search.report.confirmation_spec`); None with fewer than 2 completed trials."""


@dataclass(frozen=True)
class SearchResult:
    name: str
    objective: str
    tracking_uri: str
    experiment: str
    experiment_id: str
    search_run_id: str | None
    optuna_storage: str
    storage_path: str
    studies: tuple[StudyResult, ...]

    def mlflow_ui_command(self) -> str:
        """How to see the runs: the server's runs page, or the `mlflow ui` command for a local
        store (absolute paths: it works from any folder) and the page to open once it runs."""
        page = runs_page_url(self.tracking_uri, self.experiment_id)
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"open {page}"
        return (
            f"{program('mlflow')} ui --backend-store-uri {absolute_store(self.tracking_uri)} "
            f"--port 5000\n  then open {page}"
        )

    def optuna_line(self) -> str:
        """The Optuna study's storage, and optuna-dashboard's command when it is installed."""
        storage = absolute_store(self.optuna_storage)
        if importlib.util.find_spec("optuna_dashboard") is not None:
            return f"Optuna study: {program('optuna-dashboard')} {storage}"
        return (
            f"Optuna study: {storage} (to browse it: {sys.executable} -m pip install "
            f"optuna-dashboard, then {program('optuna-dashboard')} {storage})"
        )

    def summary(self) -> str:
        lines = [
            f"search {self.name!r}: objective {self.objective} (validation, pseudo-unseen classes)"
        ]
        for study in self.studies:
            counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in study.counts.items())
            lines.append(f"  split {study.split}: {counts}")
            if study.best_trial_id is None:
                lines.append("    no trial finished with a value")
                continue
            lines.append(
                f"    best trial {study.best_trial_id}: {self.objective} = {study.best_objective:.4f}"
            )
            lines.append(f"    best config written to {study.best_config_path}")
            lines.append(f"      train it: {program('neuron')} train {study.best_config_path}")
            lines.append(f"    results table: {study.results_path} (and .parquet)")
            if study.confirm_path:
                lines.append(
                    "    the best trials again with new seeds (are they better than seed noise?):"
                )
                lines.append(f"      {program('neuron')} ablate {study.confirm_path}")
            if study.trials_url:
                lines.append(f"    its trials in MLflow, best first: {study.trials_url}")
            if study.compare_url:
                lines.append(f"    compare them side by side: {study.compare_url}")
            if study.plots_note:
                lines.append(f"    {study.plots_note}")
        lines.append(f"Tune runs (checkpoints, --resume): {self.storage_path}")
        lines.append(self.optuna_line())
        lines.append(f"MLflow UI: {self.mlflow_ui_command()}")
        return "\n".join(lines)


def worker_runtime_env() -> dict[str, Any] | None:
    """The job's Ray runtime environment: trial and stage-1 worker processes start with the
    host allocator set to keep freed activations (`neuron.device.HOST_ALLOCATOR_TUNABLES`; on
    2 CPU cores a reference-size encoder step ran about 3x faster)."""
    env_vars = host_allocator_environment(os.environ)
    return {"env_vars": env_vars} if env_vars else None


def open_tracker(
    tracking_uri: str,
    experiment: str,
    tag: str,
    name: str,
    resume: bool,
    error: type[Exception],
    kind: str,
) -> MlflowTracker:
    """The checked MLflow store; unless resuming, `error` if the experiment already has runs
    tagged `tag` = `name` (a `kind`, search or study, of that name from another output_dir)."""
    check_tracking_uri(tracking_uri)
    tracker = MlflowTracker(tracking_uri, experiment)
    if not resume and tracker.find_run({tag: name}) is not None:
        raise error(
            f"MLflow experiment {experiment!r} at {tracking_uri} already has runs of a {kind} "
            f"named {name!r} (another output_dir?); choose another --name, or --resume it"
        )
    return tracker


def start_ray(
    address: str | None, error: type[Exception], resources: ResourcesSpec | None = None
) -> bool:
    """Connect to the cluster at `address` (else $RAY_ADDRESS), or start a local Ray of our own
    that advertises loopback only, unless Ray is already initialised. Returns whether it started
    one (the caller shuts it down); an unreachable cluster raises `error`, and so does a local
    instance too small for one trial's `resources` (it would wait for ever: nothing autoscales)."""
    if ray.is_initialized():
        return False
    cluster = address or os.environ.get("RAY_ADDRESS")
    try:
        # "local": a new instance of our own, never a cluster that a `ray start` on this
        # machine left behind (ray.init(address=None) would join the latest one).
        ray.init(
            address=cluster or "local",
            _node_ip_address=None if cluster else "127.0.0.1",
            runtime_env=worker_runtime_env(),
        )
    except ConnectionError as cause:
        raise error(
            f"cannot reach the Ray cluster at {cluster or '$RAY_ADDRESS'}: {cause}; check "
            "--address (auto, host:6379, ray://host:10001) or start the cluster first"
        ) from cause
    if not cluster and resources is not None:
        available = ray.cluster_resources()
        for key, wanted in (("cpu", resources.cpu), ("gpu", resources.gpu)):
            have = float(available.get(key.upper(), 0.0))
            if wanted > have:
                ray.shutdown()
                raise error(
                    f"resources.{key}={wanted:g}: this machine's Ray has {have:g} "
                    f"{key.upper()}{'s' if have != 1 else ''}, so no trial could ever start; use "
                    f"resources.{key}<={have:g}, or --address a cluster that has them"
                )
    return True


def absolute_store(uri: str) -> str:
    """`sqlite:///runs/x.db` → `sqlite:////abs/runs/x.db`, so a printed command works from
    any folder; other URIs unchanged."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:////"):
        return uri
    return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).absolute())


# --------------------------------------------------------------------------------------------
# The search


def _spec_record(spec: SearchSpec) -> dict[str, Any]:
    """What must not change between a search and its resume (the cluster address may)."""
    return {k: v for k, v in to_plain(spec).items() if k != "address"}


def _check_resume(spec: SearchSpec, name: str, record: Path, resume: bool) -> None:
    if resume and not record.is_file():
        raise SearchSetupError(
            f"--resume: no search named {name!r} in {record.parent.parent} (no {record}); check "
            "--name and the spec's output_dir, or start it without --resume"
        )
    if not resume and record.is_file():
        raise SearchSetupError(
            f"a search named {name!r} already exists in {record.parent}; continue it with "
            f"--name {name} --resume, or choose another --name"
        )
    if resume:
        saved = yaml.safe_load(record.read_text())
        now = json.loads(json.dumps(_spec_record(spec)))
        if saved != now:
            diff = difflib.unified_diff(
                yaml.safe_dump(saved).splitlines(),
                yaml.safe_dump(now).splitlines(),
                lineterm="",
                n=0,
            )
            changes = [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]
            raise SearchSetupError(
                f"--resume {name!r}: the spec differs from the one the search started with "
                f"({record}): {'; '.join(changes[:6])}. Resume with the same spec and overrides."
            )


def study_base(spec: SearchSpec, split: str) -> Config:
    """The split's base config as every trial sees it: threads, device, GPU share and the epoch
    selection follow the search (torch threads = CPUs per trial; `run.gpu_fraction` = GPUs per
    trial, so trials sharing a GPU keep the feature cache on the host when it would crowd it;
    the objective selects the epoch)."""
    overrides = spec.resources.run_overrides()
    if spec.objective.metric in _selectable_metrics():
        overrides["eval.selection_metric"] = spec.objective.metric
    # Trials run in their own working directories: no path may depend on the driver's cwd.
    return spec.base_config(split).replace(overrides).with_absolute_paths()


@dataclass
class _Search:
    """What every study of one search shares."""

    spec: SearchSpec
    name: str
    resume: bool
    tracker: MlflowTracker
    optuna_storage: str
    record: Path
    """`<output_dir>/<name>/search.yaml`: the spec the search started with."""
    search_run_id: str | None = None
    """The top parent MLflow run, with several splits."""
    prepared: dict[str, PendingPrepared] = dataclasses.field(default_factory=dict)
    """Each split's stage 1 and feature cache, being built (search.staging)."""

    def begin(self) -> None:
        """Claim the name once the first study is ready to launch (its caches are built): a
        search that failed before launching leaves its name free."""
        if not self.record.is_file():
            plain = json.loads(json.dumps(_spec_record(self.spec)))
            write_text_atomic(self.record, yaml.safe_dump(plain, sort_keys=False))
        splits = self.spec.split_names
        if len(splits) > 1 and self.search_run_id is None:
            self.search_run_id = self.tracker.start_search(self.name, splits, _settings(self.spec))

    @property
    def output(self) -> Path:
        return self.record.parent

    @property
    def storage(self) -> str:
        return f"{self.spec.resolved_storage_path()}/{self.name}"


def run_search(
    spec: SearchSpec, name: str, resume: bool = False, address: str | None = None
) -> SearchResult:
    """Run (or resume) the search `name`; return where everything was written. One driver per
    name: a second one is refused at once (`search.lock`)."""
    check_name(name, SearchSetupError)
    record = spec.resolved_output_dir() / name / "search.yaml"
    with hold_name(record.parent, f"search {name!r}"):
        return _run_search(spec, name, record, resume, address)


def _run_search(
    spec: SearchSpec, name: str, record: Path, resume: bool, address: str | None
) -> SearchResult:
    _check_resume(spec, name, record, resume)
    tracking_uri = spec.resolved_tracking_uri()
    tracker = open_tracker(
        tracking_uri, spec.experiment, TAG_SEARCH, name, resume, SearchSetupError, "search"
    )

    started_ray = start_ray(address or spec.address, SearchSetupError, spec.resources)
    try:
        search = _Search(
            spec=spec,
            name=name,
            resume=resume,
            tracker=tracker,
            optuna_storage=f"sqlite:///{record.parent / 'optuna.db'}",
            record=record,
        )
        # On a cluster (prepare.where=worker) every split's stage 1 starts at once, as Ray tasks
        # on GPU workers; in the driver each split is prepared when its study starts.
        for split in spec.split_names:
            search.prepared[split] = launch_prepare(study_base(spec, split), spec.prepare)
        studies = tuple(_run_study(search, split) for split in spec.split_names)
        if search.search_run_id is not None:
            _summarise_search(tracker, search.search_run_id, studies, spec.objective.metric)
    finally:
        if started_ray:
            ray.shutdown()
    return SearchResult(
        name=name,
        objective=spec.objective.metric,
        tracking_uri=tracking_uri,
        experiment=spec.experiment,
        experiment_id=tracker.experiment_id,
        search_run_id=search.search_run_id,
        optuna_storage=search.optuna_storage,
        storage_path=search.storage,
        studies=studies,
    )


def _settings(spec: SearchSpec) -> dict[str, Any]:
    plain = to_plain(spec)
    return {k: v for k, v in plain.items() if k not in ("space", "base")} | {
        "space": {k: v for k, v in plain["space"].items() if v is not None}
    }


def _run_study(search: _Search, split: str) -> StudyResult:
    spec, name = search.spec, search.name
    base = study_base(spec, split)
    prepared = search.prepared[split].wait()
    described = prepared.describe()
    study = StudyInfo(
        search_name=name,
        split=split,
        dataset=prepared.dataset_name,
        class_names=tuple(prepared.class_names),
        training_classes=tuple(described["training_classes"]),
        validation_classes=tuple(described["validation_classes"]),
        unseen_classes=tuple(described["unseen_classes"]),
        objective=spec.objective.metric,
        mode=spec.objective.mode,
        base_config=base.to_dict(),
        optuna_storage=search.optuna_storage,
        output_dir=str(search.output / split),
        settings=_settings(spec),
        time_budget_s=spec.time_budget_s,
        text_provenance={
            key: described[key] for key in ("text_encoder", "text_dim", "text_embedding_sha256")
        },
    )
    # A build published on shared storage is fetched to the driver's node for the check.
    local = localize(prepared, Path(base.run.cache_dir))
    assert local is not None
    check_objective(spec.objective.metric, base, local)
    search.begin()
    study_run_id = search.tracker.start_study(study, search.search_run_id)
    if isinstance(prepared, StagedPrepared):
        # Where stage 1 ran and where its outputs live, next to the study's other tags.
        built_on = {f"neuron.stage1.{k}": v for k, v in prepared.built_on.items()}
        search.tracker.log(
            study_run_id, tags=built_on | {"neuron.stage1.location": prepared.location}
        )
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial, base=base.to_dict(), prepared=prepared, objective=spec.objective.metric
        ),
        resources,
    )
    experiment_path = f"{search.storage}/{split}"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the CLIReporter table below
    bohb = spec.scheduler.name == "hyperband_bohb"
    pending = spec.pending_trials or (spec.max_concurrent_trials if bohb else None)
    if pending is not None:
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(pending)
    if search.resume and tune.Tuner.can_restore(experiment_path):
        tuner = tune.Tuner.restore(
            experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=False
        )
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=_tune_config(spec, base, study.study_name, search.optuna_storage),
            run_config=tune.RunConfig(
                name=split,
                storage_path=search.storage,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                # Tune keeps every checkpoint it knows of; CheckpointKeeper prunes them to two
                # and repairs restored trials (search/checkpoints.py says why).
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                callbacks=[
                    CheckpointKeeper(),
                    TrackingCallback(search.tracker, study, study_run_id),
                ],
                progress_reporter=TrialTable(
                    metric_columns=["epoch", "train/loss", spec.objective.metric],
                    parameter_columns=[p for p in TABLE_PARAMETERS if p in spec.space.searched()],
                    metric=spec.objective.metric,
                    mode=spec.objective.mode,
                    sort_by_metric=True,
                    max_report_frequency=15,
                ),
                verbose=1,
            ),
        )
    tuner.fit()
    if search.tracker.client.get_run(study_run_id).info.status == "KILLED":
        raise SearchInterrupted(
            f"search {name!r} was interrupted in split {split}; its state is saved in "
            f"{experiment_path}"
        )
    return _study_result(search.tracker, study, study_run_id)


def check_objective(metric: str, base: Config, prepared: Prepared) -> None:
    """Refuse an objective that training never reports, before any trial, study run or name
    is created (the names come from one validation pass of the untrained head)."""
    # On the driver's CPU: the driver of a GPU cluster may have no GPU.
    reported = reported_metric_names(base.replace({"run.device": "cpu"}), prepared)
    if metric in reported:
        return
    choices = sorted(name for name in reported if name.startswith("val/"))
    close = difflib.get_close_matches(metric, choices, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise SearchSetupError(
        f"objective.metric={metric!r}: training never reports this metric; {hint}the "
        f"validation metrics it reports are: {', '.join(choices)}"
    )


def _tune_config(
    spec: SearchSpec, base: Config, study_name: str, optuna_storage: str
) -> tune.TuneConfig:
    searcher = NeuronOptunaSearch(
        space=functools.partial(suggest, ranges=spec.space, base=base),
        metric=spec.objective.metric,
        mode=spec.objective.mode,
        sampler=make_sampler(spec.sampler, spec.seed),
        num_trials=spec.num_trials,
        study_name=study_name,
        storage=optuna.storages.RDBStorage(optuna_storage),
    )
    bohb = spec.scheduler.name == "hyperband_bohb"
    return tune.TuneConfig(
        search_alg=searcher,
        scheduler=make_scheduler(spec, max_epochs(spec.space, base)),
        num_samples=spec.num_trials,
        max_concurrent_trials=None if bohb else spec.max_concurrent_trials,
        reuse_actors=True,
        time_budget_s=spec.time_budget_s,
        trial_dirname_creator=trial_dirname,
    )


def _study_result(tracker: MlflowTracker, study: StudyInfo, study_run_id: str) -> StudyResult:
    run = tracker.client.get_run(study_run_id)
    tags, metrics = run.data.tags, run.data.metrics
    output = Path(study.output_dir)
    best_config = output / "best_config.yaml"
    return StudyResult(
        split=study.split,
        study_run_id=study_run_id,
        best_trial_id=tags.get("neuron.best_trial_id"),
        best_objective=metrics.get("best/objective"),
        best_config_path=best_config if best_config.is_file() else None,
        results_path=output / "results.csv",
        counts={
            k: int(tags.get(f"neuron.trials_{k}", 0))
            for k in ("completed", "stopped_early", "failed")
        },
        compare_url=tags.get(TAG_COMPARE_URL),
        trials_url=tags.get(TAG_TRIALS_URL),
        plots_note=tags.get("neuron.plots_note"),
        confirm_path=confirm if (confirm := output / "confirm.yaml").is_file() else None,
    )


def _summarise_search(
    tracker: MlflowTracker, search_run_id: str, studies: tuple[StudyResult, ...], objective: str
) -> None:
    """The top parent of a multi-split search: one row per split, side by side."""
    rows = [
        {
            "split": s.split,
            "best_trial_id": s.best_trial_id,
            objective: s.best_objective,
            "best_config": str(s.best_config_path),
            "study_run_id": s.study_run_id,
        }
        | s.counts
        for s in studies
    ]
    tracker.client.log_text(search_run_id, json.dumps(rows, indent=2), "splits.json")
    tracker.log(
        search_run_id,
        tags=flatten(
            {s.split: {"best_trial_id": str(s.best_trial_id)} for s in studies}, "neuron.best."
        ),
    )
    tracker.finish(search_run_id, "FINISHED")
