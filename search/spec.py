"""The search spec: what to search, on which splits, for which objective, with what resources.

A YAML file (see `search/specs/`) loaded into frozen dataclasses with the same machinery as the
model config (`neuron.config`: unknown keys suggest the nearest key, dotted overrides such as
`num_trials=4` or `space.train.optimizer.lr.low=0.01`). Everything is validated in `__post_init__`, including the
base config of every split and every corner of the search space, so a bad spec fails before Ray
starts. In the `space` section a bare value fixes a parameter (`epochs: 4` is `epochs: {fixed:
4}`) and `null` leaves it out (the base config's value is kept).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from neuron.config import (
    MAX_SEED,
    Config,
    ConfigError,
    from_dict,
    load_config,
    merge_plain,
    parse_override,
    read_yaml,
    set_dotted,
    to_plain,
)
from neuron.splits import PUBLISHED_SPLITS
from search.space import SECTIONS, SpaceRanges, check_space, max_epochs

TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"
"""The environment variable that names the MLflow server when the spec and the command line do
not (cluster.yaml sets it on the head node to the head's private address)."""


@dataclass(frozen=True)
class BaseSpec:
    """The Neuron config every trial starts from."""

    config: str = "default"
    """A shipped config name (`tiny`, `quick`, `default`) or a YAML path (relative paths are read
    next to the spec file first)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted overrides applied to every trial, e.g. `{train.epochs: 4}`."""

    def __post_init__(self) -> None:
        if not isinstance(self.overrides, dict):
            raise ConfigError(
                f"base.overrides={self.overrides!r}: expected a mapping of dotted keys, e.g. "
                "{train.epochs: 4}"
            )


@dataclass(frozen=True)
class ObjectiveSpec:
    """The metric Optuna optimises and the schedulers compare: always a validation metric on the
    pseudo-unseen classes, never a test metric."""

    metric: str = "val/gzsl_h"
    """A `val/...` key reported by `fit` each epoch (e.g. `val/gzsl_h`, `val/zsl_top1`)."""
    mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        if self.metric.startswith("test/"):
            raise ConfigError(
                f"objective.metric={self.metric!r}: test metrics (unseen test classes) must never "
                "select hyperparameters; use a validation metric such as val/gzsl_h or val/zsl_top1"
            )
        if not self.metric.startswith("val/"):
            raise ConfigError(
                f"objective.metric={self.metric!r}: must be a validation metric on the "
                "pseudo-unseen classes (a key starting with val/, e.g. val/gzsl_h)"
            )


@dataclass(frozen=True)
class ResourcesSpec:
    """Logical resources reserved for each trial."""

    cpu: float = 1.0
    """CPUs per trial; torch runs max(1, floor(cpu)) threads."""
    gpu: float = 0.0
    """GPUs per trial; fractions (0.25) share one GPU between trials."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cpu) and self.cpu > 0):
            raise ConfigError(f"resources.cpu={self.cpu}: must be a finite number > 0")
        if (
            not math.isfinite(self.gpu)
            or self.gpu < 0
            or (self.gpu > 1 and not float(self.gpu).is_integer())
        ):
            raise ConfigError(
                f"resources.gpu={self.gpu}: must be >= 0, a fraction below 1 or a whole number"
            )

    def run_overrides(self) -> dict[str, Any]:
        """The `run.*` overrides of a trial with these resources: torch threads = CPUs per trial,
        the device, and `run.gpu_fraction` = GPUs per trial (trials sharing a GPU keep the
        feature cache on the host when it would crowd it)."""
        overrides: dict[str, Any] = {
            "run.threads": max(1, int(self.cpu)),
            "run.device": "cuda" if self.gpu > 0 else "cpu",
        }
        if self.gpu > 0:
            overrides["run.gpu_fraction"] = min(1.0, float(self.gpu))
        return overrides


@dataclass(frozen=True)
class SchedulerSpec:
    """Early stopping of unpromising trials; the fidelity is the epoch."""

    name: Literal["asha", "none", "hyperband_bohb"] = "asha"
    """`asha` (ASHAScheduler), `none` (run every trial to the end) or `hyperband_bohb`
    (HyperBandForBOHB, with Optuna TPE as the model instead of TuneBOHB)."""
    grace_period: int = 1
    """ASHA: epochs every trial runs before it can be stopped."""
    reduction_factor: float = 2.0
    """ASHA / HyperBand: keep 1 / reduction_factor of the trials at each rung."""

    def __post_init__(self) -> None:
        if self.grace_period < 1:
            raise ConfigError(f"scheduler.grace_period={self.grace_period}: must be >= 1 epoch")
        if not (math.isfinite(self.reduction_factor) and self.reduction_factor >= 2):
            raise ConfigError(
                f"scheduler.reduction_factor={self.reduction_factor}: must be a finite number >= 2"
            )


@dataclass(frozen=True)
class SamplerSpec:
    """How Optuna proposes trials."""

    name: Literal["tpe", "random"] = "tpe"
    """`tpe` (Optuna's TPESampler, seeded with `seed`) or `random` (RandomSampler: a baseline
    that draws from the same space)."""
    startup_trials: int = 10
    """TPE: trials drawn at random before TPE proposes (Optuna's default is 10). Optuna counts
    only finished trials (completed or stopped early), so with trials running concurrently TPE
    takes over a little later."""
    multivariate: bool = False
    """TPE: model the parameters jointly (Optuna's `multivariate=True, group=True`, which also
    handles parameters that only some trials have) instead of one at a time."""

    def __post_init__(self) -> None:
        if self.startup_trials < 1:
            raise ConfigError(
                f"sampler.startup_trials={self.startup_trials}: must be >= 1 (TPE needs finished "
                "trials to model)"
            )
        if self.name == "random" and self.multivariate:
            raise ConfigError(
                "sampler.multivariate=true: only TPE models parameters; drop it or use "
                "sampler.name=tpe"
            )


@dataclass(frozen=True)
class ConfirmSpec:
    """The confirmation each study writes (`confirm.yaml`, an ablation spec): its best trials
    trained again with new seeds."""

    top: int = 3
    """Completed trials it trains again, best first (0: write none)."""
    seeds: int = 6
    """New run seeds per trial (6 is the fewest where the report's Wilcoxon test can reach
    p < 0.05)."""

    def __post_init__(self) -> None:
        if self.top != 0 and self.top < 2:
            raise ConfigError(
                f"confirm.top={self.top}: must be >= 2 (the best and at least one runner-up) or "
                "0 for no confirm.yaml"
            )
        if self.seeds < 2:
            raise ConfigError(
                f"confirm.seeds={self.seeds}: must be >= 2 (the report's intervals and paired "
                "tests need them)"
            )


@dataclass(frozen=True)
class PrepareSpec:
    """Where stage 1 and the feature cache are built."""

    where: Literal["driver", "worker"] = "driver"
    """`driver`: in the search's own process (one machine). `worker`: as a Ray task with the
    resources below, published to `shared_cache` and fetched once by each node that runs
    trials (a cluster whose head has no GPU)."""
    shared_cache: str | None = None
    """Storage every node reaches: `s3://bucket/prefix` or an NFS path. Required with
    `where: worker`."""
    cpu: float = 4.0
    """CPUs reserved by the stage-1 task."""
    gpu: float = 1.0
    """GPUs reserved by the stage-1 task (it trains on one device)."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources of the task, e.g. `{stage1: 1}` to run it on the node type that
    offers them (cluster.yaml's multi-GPU `gpu4`)."""
    inputs: dict[str, str] = field(default_factory=dict)
    """Files or folders the stage-1 task downloads before it builds, local path → URI, e.g.
    `{/home/ray/neuron-state/data/ntu60_xsub.arrow: s3://my-bucket/data/ntu60_xsub.arrow}`
    (the worker then reads `data.path` and the side information from its own disk)."""

    def __post_init__(self) -> None:
        if self.where == "worker" and not self.shared_cache:
            raise ConfigError(
                "prepare.shared_cache: required with prepare.where=worker (the trials' nodes "
                "fetch stage 1 and the feature cache from it); e.g. s3://my-bucket/neuron-search"
            )
        for local, uri in self.inputs.items():
            if "://" in local or not Path(local).is_absolute():
                raise ConfigError(
                    f"prepare.inputs: {local!r}: keys are absolute paths on the worker, values "
                    f"the URIs to download ({uri!r})"
                )
        if self.cpu < 0 or self.gpu < 0 or any(v < 0 for v in self.resources.values()):
            raise ConfigError(
                f"prepare: cpu={self.cpu}, gpu={self.gpu}, resources={self.resources}: "
                "every amount must be >= 0"
            )


class RunStores:
    """Where a spec's run writes (`output_dir`), keeps Tune's state (`storage_path`) and tracks
    to (`tracking_uri`), resolved the same way for searches and ablation studies."""

    output_dir: str
    storage_path: str | None
    tracking_uri: str | None

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir).expanduser().resolve()

    def resolved_storage_path(self) -> str:
        """Tune's storage path: a URI as given, or an absolute local path."""
        if self.storage_path is None:
            return str(self.resolved_output_dir())
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", self.storage_path):
            return self.storage_path
        return str(Path(self.storage_path).expanduser().resolve())

    def resolved_tracking_uri(self) -> str:
        """The spec's `tracking_uri`, else $MLFLOW_TRACKING_URI (set on a cluster's head), else
        the embedded SQLite store under `output_dir`."""
        if self.tracking_uri is not None:
            return self.tracking_uri
        if os.environ.get(TRACKING_URI_VARIABLE):
            return os.environ[TRACKING_URI_VARIABLE]
        return f"sqlite:///{self.resolved_output_dir() / 'mlflow.db'}"


@dataclass(frozen=True)
class SearchSpec(RunStores):
    """A hyperparameter search over Neuron: one Optuna study (and one Tune run) per split."""

    base: BaseSpec = field(default_factory=BaseSpec)
    splits: tuple[str, ...] = ()
    """Split names, one study each (e.g. [ntu60_55_5, ntu60_48_12]); empty: the base config's."""
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    num_trials: int = 8
    """Trials per study."""
    max_concurrent_trials: int = 2
    """Trials running at once (Tune runs one at a time with a searcher unless this is set)."""
    pending_trials: int | None = None
    """Trials waiting for resources at once (`TUNE_MAX_PENDING_TRIALS_PG`); raise it on an
    autoscaling cluster so pending trials ask for new nodes. Default: max_concurrent_trials."""
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    confirm: ConfirmSpec = field(default_factory=ConfirmSpec)
    seed: int = 0
    """Seed of the sampler (a study with the same seed proposes the same first points)."""
    output_dir: str = "runs/search"
    """Driver-side outputs: `<output_dir>/<name>/` (Optuna DB, best configs, results tables) and
    the default MLflow store."""
    storage_path: str | None = None
    """Tune's storage (checkpoints, experiment state): a local dir, NFS path or `s3://...`;
    every node must reach it. Default: output_dir."""
    tracking_uri: str | None = None
    """MLflow store: `sqlite:///path.db` or `http://host:port`. Default: $MLFLOW_TRACKING_URI
    (set on the head of a `ray up cluster.yaml` cluster), else `sqlite:///<output_dir>/mlflow.db`.
    A server with basic auth reads MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD."""
    experiment: str = "neuron-search"
    """MLflow experiment that receives the runs."""
    time_budget_s: float | None = None
    """Stop each study after this many seconds (running trials are recorded as stopped early)."""
    max_failures: int = 2
    """Retries of a trial after a worker/node failure (it resumes from its last checkpoint)."""
    prepare: PrepareSpec = field(default_factory=PrepareSpec)
    """Where stage 1 and the feature cache are built: in the driver (one machine) or by a Ray
    task on a GPU worker, published to shared storage (a cluster; search/staging.py)."""
    address: str | None = None
    """Ray cluster address (`auto`, `ray://...`, `host:6379`); default: $RAY_ADDRESS, else a new
    local Ray instance."""
    space: SpaceRanges = field(default_factory=SpaceRanges)

    def __post_init__(self) -> None:
        for name in ("num_trials", "max_concurrent_trials"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.pending_trials is not None and self.pending_trials < 1:
            raise ConfigError(f"pending_trials={self.pending_trials}: must be >= 1 (or null)")
        if self.max_failures < 0:
            raise ConfigError(f"max_failures={self.max_failures}: must be >= 0")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(
                f"seed={self.seed}: must be in [0, {MAX_SEED}] (Optuna's sampler seed)"
            )
        if self.time_budget_s is not None and not (
            self.time_budget_s > 0 and math.isfinite(self.time_budget_s)
        ):
            raise ConfigError(f"time_budget_s={self.time_budget_s}: must be > 0 seconds (or null)")
        if not self.experiment.strip():
            raise ConfigError("experiment: empty; name the MLflow experiment, e.g. neuron-search")
        if len(set(self.splits)) != len(self.splits):
            raise ConfigError(f"splits={list(self.splits)}: lists a split twice")
        if self.tracking_uri is not None:
            check_tracking_uri_form(self.tracking_uri, "tracking_uri")
        for split in self.split_names:
            if split != "custom" and split not in PUBLISHED_SPLITS:
                close = difflib.get_close_matches(split, list(PUBLISHED_SPLITS), n=1, cutoff=0.5)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(
                    f"splits: {split!r} is not a published split; {hint}valid: custom, "
                    + ", ".join(PUBLISHED_SPLITS)
                )
            config = self.base_config(split)
            check_space(self.space, config)
            epochs = max_epochs(self.space, config)
            if self.scheduler.name != "none" and self.scheduler.grace_period > epochs:
                raise ConfigError(
                    f"scheduler.grace_period={self.scheduler.grace_period}: longer than the "
                    f"trials ({epochs} epochs); use grace_period <= {epochs}"
                )

    def base_config(self, split: str | None = None) -> Config:
        """The base Config (for `split`), validated."""
        try:
            config = load_config(self.base.config, self.base.overrides)
        except ConfigError as error:
            raise ConfigError(f"base: {error}") from error
        if split is None or split == config.data.split:
            return config
        try:
            return config.replace({"data.split": split})
        except ConfigError as error:
            raise ConfigError(f"splits: {split!r} does not fit the base config: {error}") from error

    @property
    def split_names(self) -> tuple[str, ...]:
        """The studies' splits: `splits`, or the base config's split."""
        if self.splits:
            return self.splits
        return (self.base_config().data.split,)

    def with_overrides(self, overrides: dict[str, Any]) -> SearchSpec:
        """A new spec with dotted overrides (`num_trials`, `space.train.optimizer.lr.low`, ...) applied."""
        plain = to_plain(self)
        _apply_overrides(plain, overrides, source="override")
        return from_dict(SearchSpec, plain, source="")


def check_tracking_uri_form(uri: str, where: str) -> None:
    """Reject tracking URIs MLflow 3 cannot use for this search (file stores, bare paths)."""
    if uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://").removeprefix("file:") or ".").resolve()
        raise ConfigError(
            f"{where}={uri!r}: MLflow 3 refuses file stores; use a SQLite file "
            f"(sqlite:///{folder / 'mlflow.db'}) or a tracking server (http://host:5000)"
        )


def _normalise_space(plain: dict[str, Any]) -> None:
    """`space.train.epochs: 4` → `{fixed: 4}` (a bare value fixes a parameter), and every given
    range completed with its defaults so any of its keys can be overridden
    (`space.train.optimizer.lr.log=false`)."""
    space = plain.get("space")
    if isinstance(space, dict):
        _normalise_section(space, SpaceRanges)


def _section_class(section: type, name: str) -> type | None:
    """The range section class of field `name` of `section`, or None for a parameter."""
    hint = typing.get_type_hints(section)[name]
    return hint if hint in SECTIONS else None


def _range_class(section: type, name: str) -> type:
    hint = typing.get_type_hints(section)[name]
    return next(a for a in typing.get_args(hint) if a is not type(None))


def _normalise_section(values: dict[str, Any], section: type) -> None:
    names = {f.name for f in dataclasses.fields(section)}
    for name, value in values.items():
        if name not in names:
            continue  # from_dict reports the unknown key with a suggestion
        inner = _section_class(section, name)
        if inner is not None:
            if isinstance(value, dict):
                _normalise_section(value, inner)
            continue
        if value is not None and not isinstance(value, dict):
            value = {"fixed": value}
        if isinstance(value, dict):
            value = to_plain(_range_class(section, name)()) | value
        values[name] = value


def _merge_space(defaults: dict[str, Any], given: dict[str, Any], section: type) -> dict[str, Any]:
    """Sections merge key by key; a parameter the file gives replaces the default range
    entirely (no stale `choices` or `low` merged in from the defaults)."""
    merged = dict(defaults)
    names = {f.name for f in dataclasses.fields(section)}
    for name, value in given.items():
        inner = _section_class(section, name) if name in names else None
        if inner is not None and isinstance(value, dict) and isinstance(defaults.get(name), dict):
            merged[name] = _merge_space(defaults[name], value, inner)
        else:
            merged[name] = value
    return merged


def _open_left_out_range(plain: dict[str, Any], parts: list[str]) -> None:
    """Give a left-out parameter a range before a key of it is set:
    `space.train.epochs.low=2 space.train.epochs.high=6`."""
    values: Any = plain.get("space")
    section: type = SpaceRanges
    for depth, name in enumerate(parts[1:-1], start=1):
        names = {f.name for f in dataclasses.fields(section)}
        if not isinstance(values, dict) or name not in names:
            return
        inner = _section_class(section, name)
        if inner is None:
            if values.get(name) is None and depth < len(parts) - 1:
                values[name] = to_plain(_range_class(section, name)())
            return
        values, section = values.get(name), inner


def _apply_overrides(plain: dict[str, Any], overrides: dict[str, Any], source: str) -> None:
    for key, value in overrides.items():
        if key.startswith("base.overrides."):
            # The base overrides are themselves dotted: `base.overrides.train.epochs=4`.
            if not isinstance(plain["base"].get("overrides"), dict):
                plain["base"]["overrides"] = {}
            plain["base"]["overrides"][key.removeprefix("base.overrides.")] = value
            continue
        parts = key.split(".")
        if parts[0] == "space" and len(parts) > 2:
            _open_left_out_range(plain, parts)
        set_dotted(plain, key, value, source=source)
        _normalise_space(plain)


def _spec_defaults() -> dict[str, Any]:
    """The plain defaults of every SearchSpec field (without validating a default spec)."""
    defaults = {}
    for f in dataclasses.fields(SearchSpec):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        defaults[f.name] = to_plain(value)
    return defaults


def load_search_spec(
    path: str | Path, overrides: list[str] | dict[str, Any] | None = None
) -> SearchSpec:
    """Read a spec YAML, apply dotted overrides and validate everything (ConfigError if not)."""
    path = Path(path)
    loaded = read_yaml(path)
    if not loaded:
        raise ConfigError(
            f"{path}: the spec is empty; start from search/specs/quick.yaml (every key documented)"
        )
    _normalise_space(loaded)
    base = loaded.get("base")
    if isinstance(base, dict) and isinstance(base.get("config"), str):
        beside = path.parent / base["config"]
        base["config"] = str(beside.resolve()) if beside.is_file() else base["config"]
    plain = merge_plain(_spec_defaults(), loaded)
    if isinstance(loaded.get("space"), dict):
        plain["space"] = _merge_space(_spec_defaults()["space"], loaded["space"], SpaceRanges)
    items = (
        overrides.items()
        if isinstance(overrides, dict)
        else (parse_override(o) for o in overrides or [])
    )
    try:
        _apply_overrides(plain, dict(items), source="override")
        spec = from_dict(SearchSpec, plain, source="")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
    return spec
