"""The ablation spec: a base model, named variants, splits and seeds; expanded into a grid.

A YAML file (see `ablations/specs/`) loaded into frozen dataclasses with the model config's
machinery (`neuron.config`: unknown keys name the nearest key, dotted overrides such as
`seeds=[0,1]` or `base.overrides.train.epochs=4`). `build_plan(spec)` then resolves the base
config of every split (from a shipped config or YAML, or from the best trial of a finished
search in MLflow), expands the variants, one-factor sweeps and grids into named variants, and
validates all of them before anything starts:

- every override key exists (the error names the nearest valid key) and builds a valid config;
- no variant changes nothing, no two variants resolve to the same config, no name is used twice;
- statistics need at least 2 seeds.

The full model (the base, no overrides) is always the first variant, `full`, the reference of
every comparison. A sweep value equal to the base's value is the full model, so it is not run
twice. Every cell of the grid (variant × split × seed) is one run of stage 2 with `run.seed` =
the seed; stage 1 (the encoder and the feature cache) is trained with `stage1_seed` and shared by
every seed and every variant that leaves stage 1 alone, unless `retrain_stage1_per_seed`.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neuron.config import (
    MAX_SEED,
    Config,
    ConfigError,
    config_from_plain,
    from_dict,
    load_config,
    merge_plain,
    parse_override,
    read_yaml,
    set_dotted,
    to_plain,
)
from neuron.splits import PUBLISHED_SPLITS
from search.spec import (
    PrepareSpec,
    ResourcesSpec,
    RunStores,
    check_tracking_uri_form,
)

REFERENCE = "full"
"""The name of the full model, the reference variant of every comparison."""

DEFAULT_EXPERIMENT = "neuron-ablate"
"""The MLflow experiment of ablation studies unless a spec names another."""

REPORT_METRICS = (
    "val/zsl_top1",
    "val/gzsl_seen",
    "val/gzsl_unseen",
    "val/gzsl_h",
    "test/zsl_top1",
    "test/gzsl_seen",
    "test/gzsl_unseen",
    "test/gzsl_h",
)
"""What `fit` reports at the end of a run that a report can compare: the selected epoch's
validation ZSL and GZSL (pseudo-unseen classes; what a search's objective reads) and the
once-only unseen-test ZSL and GZSL."""

DEFAULT_METRICS = (
    "val/zsl_top1",
    "test/zsl_top1",
    "test/gzsl_seen",
    "test/gzsl_unseen",
    "test/gzsl_h",
)
"""The report's metrics unless `metrics` names others."""

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")


@dataclass(frozen=True)
class AblationBase:
    """The full model: a config plus overrides, or the best trial of a finished search."""

    config: str = "default"
    """A shipped config name (`tiny`, `quick`, `default`, `ntu60`) or a YAML path (relative paths
    are read next to the spec file first). Ignored when `search` is set."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted overrides applied to the base (after `search`'s config), e.g. `{train.epochs: 4}`."""
    search: str | None = None
    """A finished search: its name or the MLflow run id of the search, of one of its studies or
    of a trial. The base is the best trial's resolved config (of the study whose split is the
    first ablated split, else the first study)."""
    search_tracking_uri: str | None = None
    """The MLflow store holding `search`; default: the ablation's own tracking URI."""
    search_experiment: str = "neuron-search"
    """The MLflow experiment holding `search`."""

    def __post_init__(self) -> None:
        if not isinstance(self.overrides, dict):
            raise ConfigError(
                f"base.overrides={self.overrides!r}: expected a mapping of dotted keys, e.g. "
                "{train.epochs: 4}"
            )
        if self.search_tracking_uri is not None:
            check_tracking_uri_form(self.search_tracking_uri, "base.search_tracking_uri")


@dataclass(frozen=True)
class AblationSpec(RunStores):
    """An ablation study: variants × splits × seeds, every run to completion."""

    base: AblationBase = field(default_factory=AblationBase)
    variants: dict[str, Any] = field(default_factory=dict)
    """Named variants, each a mapping of dotted overrides of the base, e.g.
    `no-memory: {model.memory: replace}`."""
    sweeps: dict[str, Any] = field(default_factory=dict)
    """One-factor sweeps: a dotted key and its values, e.g. `model.spatial_prototypes: [20, 40]`;
    each value becomes a variant named `<last key part>-<value>` (`spatial_prototypes-20`)."""
    grid: dict[str, Any] = field(default_factory=dict)
    """Several keys with their values: every combination becomes one variant (named by its
    sweep names joined with `_`)."""
    splits: tuple[str, ...] = ()
    """Split names (e.g. [ntu60_55_5, ntu60_48_12]); empty: the base config's split."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Stage-2 seeds (`run.seed` of each run); every variant runs with every seed, and the
    paired tests pair runs by seed."""
    stage1_seed: int | None = None
    """The seed of stage 1 (encoder + feature cache) shared by all seeds; null: the base
    config's `run.seed`."""
    retrain_stage1_per_seed: bool = False
    """true: stage 1 is trained once per seed (with that seed), so seeds also vary the encoder;
    false: one stage 1 per split (and per stage-1 config) for all seeds."""
    statistics: bool = True
    """Confidence intervals and paired tests against the full model (needs >= 2 seeds)."""
    confidence: float = 0.95
    """Confidence level of the t-based intervals."""
    metrics: tuple[str, ...] = DEFAULT_METRICS
    """Metrics of the report (final metrics `fit` reports, `REPORT_METRICS`)."""
    primary_metric: str = "test/zsl_top1"
    """The metric of the printed summary and of the plot's first panel."""
    max_concurrent_trials: int = 2
    """Runs at once."""
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    prepare: PrepareSpec = field(default_factory=PrepareSpec)
    """Where stage 1 and the feature cache are built: in the driver (one machine), or as Ray
    tasks on GPU workers published to shared storage (a cluster), as in a search spec."""
    max_failures: int = 2
    """Retries of a run after a worker/node failure (it resumes from its last checkpoint)."""
    output_dir: str = "runs/ablate"
    """Driver-side outputs: `<output_dir>/<name>/` (report files) and the default MLflow store."""
    storage_path: str | None = None
    """Tune's storage (checkpoints, experiment state; `--resume`): a local dir, NFS path or
    `s3://...`; every node must reach it. Default: output_dir."""
    tracking_uri: str | None = None
    """MLflow store: `sqlite:///path.db` or `http://host:port`. Default:
    `sqlite:///<output_dir>/mlflow.db`."""
    experiment: str = DEFAULT_EXPERIMENT
    """MLflow experiment that receives the runs."""
    address: str | None = None
    """Ray cluster address (`auto`, `ray://...`, `host:6379`); default: $RAY_ADDRESS, else a new
    local Ray instance."""

    def __post_init__(self) -> None:
        for name in ("variants", "sweeps", "grid"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(
                    f"{name}={getattr(self, name)!r}: expected a mapping (see "
                    "ablations/specs/synthetic_components.yaml)"
                )
        if not self.seeds:
            raise ConfigError("seeds=[]: give at least one seed, e.g. [0, 1, 2]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds={list(self.seeds)}: lists a seed twice")
        for key, seeds in (("seeds", self.seeds), ("stage1_seed", (self.stage1_seed or 0,))):
            bad = [seed for seed in seeds if not 0 <= seed <= MAX_SEED]
            if bad:
                raise ConfigError(f"{key}: {bad[0]} is not a seed; seeds are in [0, {MAX_SEED}]")
        if self.statistics and len(self.seeds) < 2:
            raise ConfigError(
                f"seeds={list(self.seeds)}: confidence intervals and paired tests need at least "
                "2 seeds (3 or more to mean much); add seeds or set statistics: false"
            )
        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"confidence={self.confidence}: must be in [0.5, 1), e.g. 0.95")
        for metric in self.metrics:
            if metric not in REPORT_METRICS:
                raise ConfigError(
                    f"metrics: {metric!r} is not a final metric; {_suggest(metric, REPORT_METRICS)}"
                )
        if not self.metrics:
            raise ConfigError(f"metrics=[]: name at least one of {', '.join(REPORT_METRICS)}")
        if self.primary_metric not in self.metrics:
            raise ConfigError(
                f"primary_metric={self.primary_metric!r}: must be one of metrics "
                f"({', '.join(self.metrics)})"
            )
        if self.max_concurrent_trials < 1:
            raise ConfigError(f"max_concurrent_trials={self.max_concurrent_trials}: must be >= 1")
        if self.max_failures < 0:
            raise ConfigError(f"max_failures={self.max_failures}: must be >= 0")
        if not self.experiment.strip():
            raise ConfigError("experiment: empty; name the MLflow experiment, e.g. neuron-ablate")
        if len(set(self.splits)) != len(self.splits):
            raise ConfigError(f"splits={list(self.splits)}: lists a split twice")
        for split in self.splits:
            if split != "custom" and split not in PUBLISHED_SPLITS:
                raise ConfigError(
                    f"splits: {split!r} is not a published split; "
                    f"{_suggest(split, ('custom', *PUBLISHED_SPLITS))}"
                )
        if self.tracking_uri is not None:
            check_tracking_uri_form(self.tracking_uri, "tracking_uri")

    def with_overrides(self, overrides: dict[str, Any]) -> AblationSpec:
        """A new spec with dotted overrides (`seeds`, `base.overrides.train.epochs`, ...)."""
        plain = to_plain(self)
        _apply_overrides(plain, overrides)
        return from_dict(AblationSpec, plain, source="")


def _suggest(value: str, valid: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(value, list(valid), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid: {', '.join(valid)}"


def _apply_overrides(plain: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        for section in ("base.overrides.", "variants.", "sweeps.", "grid."):
            # These sections hold dotted keys themselves: `base.overrides.train.epochs=4`,
            # `sweeps.model.steps=[1,2]`, `variants.no-memory={model.memory: replace}`.
            if key.startswith(section):
                parent, _, inner = section.rstrip(".").partition(".")
                target = plain[parent] if not inner else plain[parent].setdefault(inner, {})
                if not isinstance(target, dict):
                    target = {}
                    plain[parent][inner] = target
                target[key.removeprefix(section)] = value
                break
        else:
            set_dotted(plain, key, value, source="override")


def _spec_defaults() -> dict[str, Any]:
    defaults = {}
    for f in dataclasses.fields(AblationSpec):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        defaults[f.name] = to_plain(value)
    return defaults


def _duplicate_keys(text: str, sections: tuple[str, ...]) -> list[str]:
    """Keys given twice inside the top-level mapping `sections` (YAML keeps the last silently)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []  # read_yaml reports the syntax error
    found: list[str] = []
    if not isinstance(root, yaml.MappingNode):
        return found
    for key_node, value_node in root.value:
        if key_node.value not in sections or not isinstance(value_node, yaml.MappingNode):
            continue
        seen: set[str] = set()
        for inner, _ in value_node.value:
            if inner.value in seen:
                found.append(
                    f"{key_node.value}.{inner.value} (line {inner.start_mark.line + 1}) is given "
                    "twice; give each variant its own name"
                )
            seen.add(inner.value)
    return found


def load_ablation_spec(
    path: str | Path, overrides: list[str] | dict[str, Any] | None = None
) -> AblationSpec:
    """Read a spec YAML, apply dotted overrides and validate its structure (ConfigError if not).
    `build_plan` validates the variants against the base config."""
    path = Path(path)
    loaded = read_yaml(path)
    if not loaded:
        raise ConfigError(
            f"{path}: the spec is empty; start from ablations/specs/synthetic_components.yaml "
            "(every key documented)"
        )
    duplicates = _duplicate_keys(path.read_text(), ("variants", "sweeps", "grid"))
    if duplicates:
        raise ConfigError(f"{path}: {duplicates[0]}")
    base = loaded.get("base")
    if isinstance(base, dict) and isinstance(base.get("config"), str):
        beside = path.parent / base["config"]
        base["config"] = str(beside.resolve()) if beside.is_file() else base["config"]
    plain = merge_plain(_spec_defaults(), loaded)
    for section in ("variants", "sweeps", "grid"):
        # Given sections replace the defaults (empty) wholesale; null means none.
        plain[section] = loaded.get(section) or {}
    items = (
        overrides.items()
        if isinstance(overrides, dict)
        else (parse_override(o) for o in overrides or [])
    )
    try:
        _apply_overrides(plain, dict(items))
        return from_dict(AblationSpec, plain, source="")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


# --------------------------------------------------------------------------------------------
# The plan: resolved base configs, expanded variants, the grid of cells


@dataclass(frozen=True)
class Variant:
    """One named configuration of the study: dotted overrides of the base."""

    name: str
    overrides: dict[str, Any]
    origin: str
    """`reference`, `variant`, `sweep <key>` or `grid`."""

    def describe(self) -> str:
        if not self.overrides:
            return "the base config"
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in self.overrides.items())


@dataclass(frozen=True)
class Cell:
    """One run: a variant on a split with a stage-2 seed (and its stage-1 seed)."""

    variant: str
    split: str
    seed: int
    stage1_seed: int

    @property
    def key(self) -> str:
        return f"{self.variant}|{self.split}|{self.seed}"

    @property
    def title(self) -> str:
        return f"{self.variant} · {self.split} · seed {self.seed}"


@dataclass(frozen=True)
class Plan:
    """A validated study: the base config of each split, the variants and every cell."""

    spec: AblationSpec
    bases: dict[str, dict[str, Any]]
    """Split → the resolved base config (plain)."""
    variants: tuple[Variant, ...]
    cells: tuple[Cell, ...]
    base_source: str
    """Where the base came from (a config name/path, or the search trial's run)."""

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.bases)

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def config(self, cell: Cell, stage1: bool = False) -> Config:
        """The cell's config (`run.seed` = its seed), or the config that builds its stage 1
        (`run.seed` = its stage-1 seed)."""
        overrides = dict(self.variant(cell.variant).overrides)
        overrides["run.seed"] = cell.stage1_seed if stage1 else cell.seed
        return config_from_plain(self.bases[cell.split]).replace(overrides)

    def to_plain(self) -> dict[str, Any]:
        """What a report needs to rebuild itself from MLflow alone (logged on the parent run)."""
        return {
            "variants": [dataclasses.asdict(v) for v in self.variants],
            "splits": list(self.splits),
            "seeds": list(self.spec.seeds),
            "metrics": list(self.spec.metrics),
            "primary_metric": self.spec.primary_metric,
            "confidence": self.spec.confidence,
            "statistics": self.spec.statistics,
            "base_source": self.base_source,
            "cells": len(self.cells),
        }


def value_name(value: Any) -> str:
    """`12` → `12`, `[2, 4, 8]` → `2-4-8`, `true` → `true` (names of sweep variants)."""
    if isinstance(value, (list, tuple)):
        return "-".join(value_name(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def expand_variants(spec: AblationSpec) -> list[Variant]:
    """The full model, the named variants, then one variant per sweep value and grid point
    (in the spec's order). Names are checked; configs are checked by `build_plan`."""
    variants = [Variant(REFERENCE, {}, "reference")]
    for name, overrides in spec.variants.items():
        if not isinstance(overrides, dict):
            raise ConfigError(
                f"variants.{name}={overrides!r}: expected a mapping of dotted overrides, e.g. "
                "{model.memory: replace}"
            )
        variants.append(Variant(str(name), dict(overrides), "variant"))
    for key, values in spec.sweeps.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"sweeps.{key}={values!r}: expected a list of values, e.g. [20, 40, 80]"
            )
        short = key.rsplit(".", 1)[-1]
        for value in values:
            variants.append(Variant(f"{short}-{value_name(value)}", {key: value}, f"sweep {key}"))
    if spec.grid:
        for key, values in spec.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key}={values!r}: expected a list of values")
        keys = list(spec.grid)
        for combination in itertools.product(*(spec.grid[k] for k in keys)):
            name = "_".join(
                f"{k.rsplit('.', 1)[-1]}-{value_name(v)}"
                for k, v in zip(keys, combination, strict=True)
            )
            variants.append(Variant(name, dict(zip(keys, combination, strict=True)), "grid"))
    seen: dict[str, Variant] = {}
    for variant in variants:
        if not NAME_PATTERN.fullmatch(variant.name):
            raise ConfigError(
                f"variant name {variant.name!r}: use letters, digits and . _ = + - (it names "
                "runs and files)"
            )
        if variant.name in seen:
            where = (
                "is reserved for the base (the reference)"
                if variant.name == REFERENCE
                else (f"is used twice ({seen[variant.name].origin} and {variant.origin})")
            )
            raise ConfigError(f"variant name {variant.name!r} {where}; rename one")
        seen[variant.name] = variant
    return variants


def _base_plain(spec: AblationSpec, split: str, search_config: dict[str, Any] | None) -> Config:
    if search_config is not None:
        try:
            config = config_from_plain(search_config).replace(spec.base.overrides)
        except ConfigError as error:
            raise ConfigError(f"base.overrides (on the search's best config): {error}") from error
    else:
        try:
            config = load_config(spec.base.config, spec.base.overrides)
        except ConfigError as error:
            raise ConfigError(f"base: {error}") from error
    if split != config.data.split:
        try:
            config = config.replace({"data.split": split})
        except ConfigError as error:
            raise ConfigError(f"splits: {split!r} does not fit the base config: {error}") from error
    # Threads, device and GPU share follow the resources, as in a search.
    resources = spec.resources.run_overrides()
    # Runs execute in their own working directories: no path may depend on the driver's cwd.
    return config.replace(resources).with_absolute_paths()


def _comparable(config: Config) -> str:
    plain = config.to_dict()
    plain["run"] = {k: v for k, v in plain["run"].items() if k != "seed"}
    return json.dumps(plain, sort_keys=True)


def build_plan(
    spec: AblationSpec,
    search_config: dict[str, Any] | None = None,
    base_source: str | None = None,
) -> Plan:
    """Resolve and validate everything: base configs, variants, cells. `search_config` is the
    best trial's config when the base is a search (`ablations.runner.resolve_search_base`)."""
    if spec.base.search is not None and search_config is None:
        raise ConfigError("base.search is set: resolve the search's best config first")
    first = config_from_plain(search_config) if search_config is not None else _load_base_only(spec)
    splits = spec.splits or (first.data.split,)
    bases = {split: _base_plain(spec, split, search_config) for split in splits}
    variants = expand_variants(spec)
    kept: list[Variant] = [variants[0]]
    for variant in variants[1:]:
        resolved: dict[str, str] = {}
        for split, base in bases.items():
            if "run.seed" in variant.overrides:
                raise ConfigError(
                    f"variant {variant.name!r}: run.seed is set by `seeds`; remove it"
                )
            try:
                config = base.replace(variant.overrides)
            except ConfigError as error:
                raise ConfigError(f"variant {variant.name!r}: {error}") from error
            resolved[split] = _comparable(config)
        unchanged = all(resolved[s] == _comparable(bases[s]) for s in bases)
        if unchanged:
            if variant.origin.startswith(("sweep", "grid")):
                continue  # the base's own value: that point of the sweep is the full model
            raise ConfigError(
                f"variant {variant.name!r} ({variant.describe()}) changes nothing: the base "
                "already has these values; remove it or change a value"
            )
        for other in kept[1:]:
            if all(_comparable(bases[s].replace(other.overrides)) == resolved[s] for s in bases):
                raise ConfigError(
                    f"variants {other.name!r} and {variant.name!r} resolve to the same config "
                    f"({other.describe()} vs {variant.describe()}); keep one"
                )
        kept.append(variant)
    seeds = spec.seeds
    cells = tuple(
        Cell(
            variant=v.name,
            split=split,
            seed=seed,
            stage1_seed=seed
            if spec.retrain_stage1_per_seed
            else (spec.stage1_seed if spec.stage1_seed is not None else bases[split].run.seed),
        )
        for split in splits
        for v in kept
        for seed in seeds
    )
    return Plan(
        spec=spec,
        bases={s: c.to_dict() for s, c in bases.items()},
        variants=tuple(kept),
        cells=cells,
        base_source=base_source or spec.base.config,
    )


def _load_base_only(spec: AblationSpec) -> Config:
    try:
        return load_config(spec.base.config, spec.base.overrides)
    except ConfigError as error:
        raise ConfigError(f"base: {error}") from error
