"""Run an ablation study: every cell (variant × split × seed) is one Tune trial, to completion.

`run_ablation(plan, name)`:

1. the study name (taken? resumable?) and the tracking store are checked, then `ray.init` (the
   cluster at `address` / $RAY_ADDRESS, else a local instance of our own);
2. stage 1 once per distinct stage-1 input (`prepare_cells`: in the driver, or with
   `prepare.where: worker` as Ray tasks on GPU workers, published to shared storage and fetched
   once per node, as in a search): variants that only
   change stage 2 share one encoder and one feature cache per (split, stage-1 seed); a variant
   that changes stage 1 (encoder, pre-training, preprocessing, data) gets its own, built once.
   What was built now and what was found in the cache is counted and printed;
3. one Tune run over a grid of the cells (`tune.grid_search`; no searcher, no scheduler: every
   run goes to completion), with search/'s machinery: the same trainable body
   (`search.trainable.run_trial`), resources and fractional GPUs per run, per-epoch checkpoints
   pruned and repaired by `CheckpointKeeper`, `FailureConfig(max_failures)` and `--resume`
   through `Tuner.restore`. A failed run is recorded with its reason and the study goes on;
4. `AblationCallback` writes one MLflow child run per cell; at the end the report is built from
   MLflow (`ablations.report`), exactly as `neuron ablate report` rebuilds it later.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune

from ablations.report import Report, build_report, publish_report
from ablations.spec import DEFAULT_EXPERIMENT, AblationSpec, Plan, build_plan
from ablations.tracking import TAG_ABLATION, AblationCallback, start_parents
from neuron.atomic import write_text_atomic
from neuron.cli import check_name, program
from neuron.config import Config, config_from_plain, load_yaml_text, to_plain
from neuron.prepare import Prepared, prepare
from search.checkpoints import CheckpointKeeper
from search.lock import hold_name
from search.runner import absolute_store, open_tracker, start_ray, trial_dirname
from search.spec import PrepareSpec
from search.staging import AnyPrepared, PendingPrepared, StagedPrepared, launch_prepare
from search.tracking import TAG_ROLE, TAG_SEARCH, MlflowTracker, check_tracking_uri, ui_url
from search.trainable import run_trial


class AblationSetupError(ValueError):
    """The study cannot start (name taken, nothing to resume, spec changed, base not found)."""


class AblationInterrupted(RuntimeError):
    """Tune stopped before every run finished (Ctrl-C); the message says how to continue."""


# --------------------------------------------------------------------------------------------
# The base from a finished search


def resolve_search_base(spec: AblationSpec) -> tuple[dict[str, Any], str]:
    """The best trial's resolved config of the search `base.search` (a search name or the run id
    of its search, study or trial run) and a description of where it came from."""
    reference = spec.base.search
    assert reference is not None
    uri = spec.base.search_tracking_uri or spec.resolved_tracking_uri()
    check_tracking_uri(uri)
    tracker = MlflowTracker(uri, spec.base.search_experiment)
    run = None
    if re.fullmatch(r"[0-9a-f]{32}", reference):
        try:
            run = tracker.client.get_run(reference)
        except Exception:
            run = None
    if run is None:
        run = tracker.find_run({TAG_SEARCH: reference, TAG_ROLE: "search"}) or tracker.find_run(
            {TAG_SEARCH: reference, TAG_ROLE: "study"}
        )
    if run is None:
        raise AblationSetupError(
            f"base.search={reference!r}: no search run or study with that name or run id in "
            f"experiment {spec.base.search_experiment!r} at {uri}; check the name "
            "(`neuron search` printed it) and base.search_tracking_uri"
        )
    role = run.data.tags.get(TAG_ROLE)
    if role == "search":
        studies = [
            r for r in tracker.children(run.info.run_id) if r.data.tags.get(TAG_ROLE) == "study"
        ]
        wanted = spec.splits[0] if spec.splits else None
        studies.sort(key=lambda r: r.data.tags.get("neuron.split") != wanted)
        if not studies:
            raise AblationSetupError(f"base.search={reference!r}: the search has no studies")
        run = studies[0]
        role = "study"
    if role == "study":
        best = run.data.tags.get("neuron.best_run_id")
        if not best:
            raise AblationSetupError(
                f"base.search={reference!r}: study {run.info.run_name!r} has no best trial yet "
                "(is the search finished?)"
            )
        run = tracker.client.get_run(best)
    elif role != "trial":
        raise AblationSetupError(
            f"base.search={reference!r}: run {run.info.run_id} is not a search, study or trial run"
        )
    with tempfile.TemporaryDirectory() as folder:
        path = tracker.client.download_artifacts(run.info.run_id, "config.yaml", folder)
        plain = load_yaml_text(Path(path).read_text())
    return plain, f"search trial {run.info.run_name} (MLflow run {run.info.run_id})"


def plan_study(spec: AblationSpec) -> Plan:
    """The validated plan (the base resolved from MLflow first when it is a search)."""
    if spec.base.search is None:
        return build_plan(spec)
    plain, source = resolve_search_base(spec)
    return build_plan(spec, plain, source)


# --------------------------------------------------------------------------------------------
# Stage 1, shared


def prepare_stage1(cfg: Config, progress: bool = True) -> Prepared:
    """Dataset, text embeddings, stage-1 encoder and feature cache for `cfg` (built or found in
    `run.cache_dir`, keyed by hashes of their inputs). The one place a study prepares."""
    return prepare(cfg, progress=progress)


@dataclass
class Stage1:
    """The prepared stage 1 of every cell, and how many encoders and caches were built now."""

    prepared: dict[str, AnyPrepared] = field(default_factory=dict)
    """Cell key → its Prepared (or, built on a worker, its copy on shared storage)."""
    encoders_built: int = 0
    encoders_reused: int = 0
    caches_built: int = 0
    caches_reused: int = 0

    def summary(self, cells: int) -> str:
        encoders = self.encoders_built + self.encoders_reused
        caches = self.caches_built + self.caches_reused
        return (
            f"stage 1: {encoders} encoder(s) and {caches} feature cache(s) serve {cells} runs "
            f"(built now: {self.encoders_built} encoder(s), {self.caches_built} cache(s); "
            f"found in the cache: {self.encoders_reused} encoder(s), {self.caches_reused} "
            "cache(s))"
        )

    def to_plain(self) -> dict[str, int]:
        return {
            "encoders_built": self.encoders_built,
            "encoders_reused": self.encoders_reused,
            "caches_built": self.caches_built,
            "caches_reused": self.caches_reused,
        }


def _cache_files(cfg: Config) -> set[Path]:
    cache = Path(cfg.run.cache_dir)
    return set(cache.glob("encoders/*/encoder.pt")) | set(cache.glob("features/*.arrow"))


def prepare_cells(plan: Plan, spec: PrepareSpec) -> Stage1:
    """Stage 1 for every cell: one build per distinct stage-1 config (cells whose stage-1
    configs only differ in stage-2 fields resolve to the same files). With
    `prepare.where: worker` every distinct build starts at once as a Ray task on a GPU worker
    and is published to shared storage (`search.staging`)."""
    stage1 = Stage1()
    existing: set[Path] = set()
    for cell in plan.cells:
        existing |= _cache_files(plan.config(cell, stage1=True))
    pending: dict[str, PendingPrepared] = {}
    keys: dict[str, str] = {}
    for cell in plan.cells:
        cfg = plan.config(cell, stage1=True)
        key = json.dumps(cfg.to_dict(), sort_keys=True)
        if key not in pending:
            pending[key] = launch_prepare(cfg, spec)
        keys[cell.key] = key
    by_config = {key: build.wait() for key, build in pending.items()}
    for cell_key, key in keys.items():
        stage1.prepared[cell_key] = by_config[key]
    local = [p for p in by_config.values() if isinstance(p, Prepared)]
    encoders = {p.encoder_checkpoint for p in local}
    caches = {p.feature_cache_path for p in local}
    staged = [p for p in by_config.values() if isinstance(p, StagedPrepared)]
    found_staged = sum(1 for p in staged if p.built_on.get("reused") == "true")
    stage1.encoders_built = len(encoders - existing) + len(staged) - found_staged
    stage1.encoders_reused = len(encoders & existing) + found_staged
    stage1.caches_built = len(caches - existing) + len(staged) - found_staged
    stage1.caches_reused = len(caches & existing) + found_staged
    return stage1


# --------------------------------------------------------------------------------------------
# The trainable


def train_cell(
    config: dict[str, Any], *, cells: dict[str, dict[str, Any]], prepared: dict[str, AnyPrepared]
) -> None:
    """One cell: its resolved config and the stage 1 prepared for it (by the driver, or on a
    worker and fetched from shared storage by `run_trial`). On a node that cannot see the
    driver's `run.cache_dir`, stage 1 is prepared there once per node (file lock) from the
    cell's stage-1 config, so the encoder's seed stays the study's stage-1 seed."""
    cell = cells[config["cell"]]
    found: AnyPrepared | None = prepared[config["cell"]]
    if isinstance(found, Prepared) and not Path(found.feature_cache_path).is_file():
        found = prepare_stage1(config_from_plain(cell["stage1"]), progress=False)
    run_trial(config_from_plain(cell["config"]), found)


# --------------------------------------------------------------------------------------------
# The study


@dataclass(frozen=True)
class AblationResult:
    name: str
    tracking_uri: str
    experiment: str
    experiment_id: str
    root_run_id: str
    """The top run (several splits) or the study run (one split)."""
    storage_path: str
    stage1: Stage1
    report: Report
    output_dir: Path

    def mlflow_url(self) -> str:
        """The study's run page (its description is the report table): on the tracking server,
        or after the `mlflow ui` command for a local store, which works from any folder."""
        page = (
            f"{ui_url(self.tracking_uri)}/#/experiments/{self.experiment_id}/runs/"
            f"{self.root_run_id}?workflowType=machine_learning"
        )
        if self.tracking_uri.startswith(("http://", "https://")):
            return page
        return (
            f"{program('mlflow')} ui --backend-store-uri {absolute_store(self.tracking_uri)} "
            f"--port 5000\n  then open {page}"
        )

    def report_command(self) -> str:
        """`neuron ablate report` for this study, with its store and (unless the default) its
        experiment, e.g. `neuron-confirm` for a search's confirm.yaml."""
        command = (
            f"{program('neuron')} ablate report {self.name} "
            f"--tracking-uri {absolute_store(self.tracking_uri)}"
        )
        if self.experiment != DEFAULT_EXPERIMENT:
            command += f" --experiment {shlex.quote(self.experiment)}"
        return command

    def summary(self) -> str:
        lines = [
            self.report.text(),
            "",
            self.stage1.summary(len(self.report.cells)),
            f"report: {self.output_dir}/report.md (and report.csv, one PNG per split)",
            f"rebuild it from MLflow: {self.report_command()}",
            f"Tune runs (checkpoints, --resume): {self.storage_path}",
            f"MLflow: {self.mlflow_url()}",
        ]
        return "\n".join(lines)


def _spec_record(spec: AblationSpec) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in to_plain(spec).items() if k != "address"}))


def _check_resume(spec: AblationSpec, name: str, record: Path, resume: bool) -> None:
    if resume and not record.is_file():
        raise AblationSetupError(
            f"--resume: no ablation study named {name!r} in {record.parent.parent} (no {record}); "
            "check --name and the spec's output_dir, or start it without --resume"
        )
    if not resume and record.is_file():
        raise AblationSetupError(
            f"an ablation study named {name!r} already exists in {record.parent}; continue it "
            f"with --name {name} --resume, or choose another --name"
        )
    if resume and yaml.safe_load(record.read_text()) != _spec_record(spec):
        raise AblationSetupError(
            f"--resume {name!r}: the spec differs from the one the study started with "
            f"({record}); resume with the same spec and overrides"
        )


def run_ablation(
    plan: Plan, name: str, resume: bool = False, address: str | None = None
) -> AblationResult:
    """Run (or resume) the study `name`; return where everything was written. One driver per
    study name: a second one is refused at once (`search.lock`)."""
    check_name(name, AblationSetupError)
    output = plan.spec.resolved_output_dir() / name
    with hold_name(output, f"ablation study {name!r}"):
        return _run_ablation(plan, name, resume, address)


def _run_ablation(
    plan: Plan, name: str, resume: bool = False, address: str | None = None
) -> AblationResult:
    spec = plan.spec
    output = spec.resolved_output_dir() / name
    record = output / "ablation.yaml"
    _check_resume(spec, name, record, resume)
    tracking_uri = spec.resolved_tracking_uri()
    tracker = open_tracker(
        tracking_uri, spec.experiment, TAG_ABLATION, name, resume, AblationSetupError, "study"
    )
    started_ray = start_ray(address or spec.address, AblationSetupError, spec.resources)
    try:
        # After ray.init: with prepare.where=worker each distinct stage 1 is a Ray task.
        stage1 = prepare_cells(plan, spec.prepare)
        print(stage1.summary(len(plan.cells)), flush=True)
        if not record.is_file():
            write_text_atomic(record, yaml.safe_dump(_spec_record(spec), sort_keys=False))
        top, studies = start_parents(tracker, name, plan)
        root = top or studies[plan.splits[0]]
        storage = f"{spec.resolved_storage_path()}/{name}"
        _tune(plan, name, tracker, top, studies, stage1, storage, resume)
        if any(tracker.client.get_run(r).info.status == "KILLED" for r in studies.values()):
            raise AblationInterrupted(
                f"ablation study {name!r} was interrupted; its state is saved in {storage}. "
                f"Continue it with: neuron ablate SPEC --name {name} --resume (the same spec "
                "and overrides)"
            )
        report = build_report(tracker, root)
        publish_report(tracker, report, output, stage1=stage1.to_plain())
    finally:
        if started_ray:
            ray.shutdown()
    return AblationResult(
        name=name,
        tracking_uri=tracking_uri,
        experiment=spec.experiment,
        experiment_id=tracker.experiment_id,
        root_run_id=root,
        storage_path=storage,
        stage1=stage1,
        report=report,
        output_dir=output,
    )


def _tune(
    plan: Plan,
    name: str,
    tracker: MlflowTracker,
    top: str | None,
    studies: dict[str, str],
    stage1: Stage1,
    storage: str,
    resume: bool,
) -> None:
    spec = plan.spec
    cells = {
        c.key: {
            "config": plan.config(c).to_dict(),
            "stage1": plan.config(c, stage1=True).to_dict(),
        }
        for c in plan.cells
    }
    trainable = tune.with_resources(
        tune.with_parameters(train_cell, cells=cells, prepared=stage1.prepared),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    experiment_path = f"{storage}/grid"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the CLIReporter table below
    callbacks = [CheckpointKeeper(), AblationCallback(tracker, name, plan, studies, top)]
    if resume and tune.Tuner.can_restore(experiment_path):
        tuner = tune.Tuner.restore(
            experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=False
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"cell": tune.grid_search([c.key for c in plan.cells])},
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=spec.max_concurrent_trials,
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name="grid",
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                callbacks=callbacks,
                progress_reporter=tune.CLIReporter(
                    metric_columns=["epoch", spec.primary_metric],
                    parameter_columns=["cell"],
                    max_column_length=48,
                    max_report_frequency=15,
                ),
                verbose=1,
            ),
        )
    tuner.fit()


def describe_plan(plan: Plan) -> str:
    """What will run, before it runs."""
    seeds = ", ".join(str(s) for s in plan.spec.seeds)
    lines = [
        f"{len(plan.variants)} variants × {len(plan.splits)} split(s) × {len(plan.spec.seeds)} "
        f"seeds = {len(plan.cells)} runs (seeds {seeds}; stage 1 "
        + ("re-trained per seed)" if plan.spec.retrain_stage1_per_seed else "shared across seeds)")
    ]
    for variant in plan.variants:
        lines.append(f"  {variant.name}: {variant.describe()}")
    return "\n".join(lines)
