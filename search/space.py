"""The search space: one define-by-run function over Optuna's `trial.suggest_*`.

`define_space(trial, ranges, base)` proposes a point and returns it as DOTTED `Config` overrides
(`{"model.spatial_prototypes": 60, "train.optimizer.lr": 0.03, ...}`), ready for `Config.replace`.
One name per knob: a parameter that sets one config field is named by its dotted config key,
in the spec (`space: {train: {optimizer: {lr: ...}}}`, override `space.train.optimizer.lr.low`),
in Optuna, and in MLflow (`search.train.optimizer.lr` marks the searched value of the param
`train.optimizer.lr`). Four parameters derive several fields and keep plain names (below).

Each parameter is searched (`low`/`high` or `choices`), fixed (`fixed: value`, or a bare value in
YAML) or left out (`null`: the base config's value is kept). Parameters that do not apply are
never suggested (conditional, define-by-run):

- `model.compression_per_step` only when compression is on; nothing spatial with
  `branches: temporal`;
- nothing temporal with `branches: spatial`; `model.gate` only with the gated memory;
- `spatial_loss_share` only with both branches; `step_loss_weighting` only with 2 or 3 steps.

Derived quantities follow the number of steps S so every point is a valid `Config`:

- temporal windows: a 3-round schedule `w1 = round(fraction * F)`, `w_{r+1} = min(F,
  round(w_r * growth))` over the encoder's F feature frames; the last S rounds are used, because
  step i aligns with side-information round 3 - S + i (see `ModelConfig.steps`). The reference
  (5, 10, 16) is fraction 5/16, growth 2 with F = 16.
- step loss weights: `uniform` (1/S each) or `increasing` (1 : 2 : 4, the authors' 0.125 / 0.25 /
  0.5 schedule, normalised to sum 1 so the loss scale matches `uniform`).
- branch loss weights: (share, 1 - share).
- learning-rate milestones: when a trial sets `train.epochs`, the base config's
  `train.optimizer.lr_milestones` are rescaled to it (`neuron.config.scale_milestones`), so the
  schedule keeps its shape and every milestone still fires.

`check_space(ranges, base)` rejects ranges that could produce an invalid `Config` before any trial
starts: it checks the compression rule in closed form (for a precise message), then builds the
`Config` of every corner of the box (low / high / worst-compression numeric corners × every
combination of choices).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing
from dataclasses import dataclass, field
from typing import Any

import optuna

from neuron.config import Config, ConfigError, ModelConfig, scale_milestones

ROUNDS = 3
"""Side-information rounds; `model.steps` is at most this (one step per round)."""

STEP_WEIGHTINGS = ("uniform", "increasing")
"""Named per-step loss weightings (see the module docstring)."""


@dataclass(frozen=True)
class IntRange:
    """An integer parameter: searched in [low, high] (with `step`, or `log`), or `fixed`."""

    low: int | None = None
    high: int | None = None
    step: int = 1
    """Grid step; (high - low) must be a multiple of it."""
    log: bool = False
    """Sample on a log scale (needs low >= 1 and step 1)."""
    fixed: int | None = None
    """Use this value in every trial instead of searching."""


@dataclass(frozen=True)
class FloatRange:
    """A real parameter: searched in [low, high] (uniform or `log`), or `fixed`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    """Sample on a log scale (needs low > 0)."""
    fixed: float | None = None
    """Use this value in every trial instead of searching."""


@dataclass(frozen=True)
class BoolChoice:
    """A switch: searched over `choices`, or `fixed`."""

    choices: tuple[bool, ...] = (True, False)
    fixed: bool | None = None


@dataclass(frozen=True)
class StrChoice:
    """A named option: searched over `choices`, or `fixed`."""

    choices: tuple[str, ...] = ()
    fixed: str | None = None


Range = IntRange | FloatRange | BoolChoice | StrChoice

Suggester = optuna.Trial | optuna.trial.FixedTrial
"""What `define_space` proposes with: a live trial, or a fixed point (corners, replays)."""


@dataclass(frozen=True)
class ModelRanges:
    """Ranges of `model.*` fields; each parameter is named by its config key."""

    spatial_prototypes: IntRange | None = field(default_factory=lambda: IntRange(40, 160, step=20))
    """K of the spatial micro-prototype table."""
    temporal_prototypes: IntRange | None = field(default_factory=lambda: IntRange(40, 160, step=20))
    """K of the temporal micro-prototype table."""
    steps: IntRange | None = field(default_factory=lambda: IntRange(1, 3))
    """Evolution steps S; windows and step weights follow it."""
    compression: BoolChoice | None = field(default_factory=BoolChoice)
    """Spatial compression on/off."""
    compression_per_step: IntRange | None = field(default_factory=lambda: IntRange(4, 13))
    """Prototypes each joint drops per step, only with compression; high * max steps must stay
    below the smallest spatial_prototypes."""
    memory: StrChoice | None = field(default_factory=lambda: StrChoice(("gated", "replace")))
    """Temporal memory on (`gated`) or off (`replace`)."""
    gate: StrChoice | None = field(default_factory=lambda: StrChoice(("relu_sigmoid", "sigmoid")))
    """Gate form of the gated memory (only with `memory: gated`)."""
    logit_scale: FloatRange | None = field(default_factory=lambda: FloatRange(0.03, 0.3, log=True))
    """Scale of the cosine logits."""


@dataclass(frozen=True)
class OptimizerRanges:
    """Ranges of `train.optimizer.*` fields (stage 2)."""

    lr: FloatRange | None = field(default_factory=lambda: FloatRange(0.01, 0.3, log=True))
    """Stage-2 learning rate."""
    weight_decay: FloatRange | None = field(
        default_factory=lambda: FloatRange(1e-5, 1e-3, log=True)
    )
    """Stage-2 weight decay."""


@dataclass(frozen=True)
class TrainRanges:
    """Ranges of `train.*` fields (stage 2)."""

    epochs: IntRange | None = None
    """Stage-2 epochs; usually fixed: with ASHA the epoch is the fidelity. The learning-rate
    milestones follow it (`scale_milestones`)."""
    optimizer: OptimizerRanges = field(default_factory=OptimizerRanges)


SECTIONS = (ModelRanges, TrainRanges, OptimizerRanges)
"""Range sections: nested like the config, so a parameter's dotted path is its config key."""


@dataclass(frozen=True)
class SpaceRanges:
    """Ranges of every searchable quantity. `None` leaves the base config's value untouched.

    A parameter that sets one config field is named by that field's dotted key
    (`model.memory`, `train.optimizer.lr`): the same name in the spec, in Optuna and in MLflow.
    The four top-level parameters are not config fields; they derive several fields at once."""

    model: ModelRanges = field(default_factory=ModelRanges)
    train: TrainRanges = field(default_factory=TrainRanges)
    temporal_first_window_fraction: FloatRange | None = field(
        default_factory=lambda: FloatRange(0.2, 0.5)
    )
    """First-round window as a fraction of the encoder's feature frames (in (0, 1]);
    derives `model.temporal_windows` with `temporal_window_growth`."""
    temporal_window_growth: FloatRange | None = field(default_factory=lambda: FloatRange(1.0, 2.5))
    """Factor between consecutive round windows (>= 1; capped at the feature frames)."""
    spatial_loss_share: FloatRange | None = field(default_factory=lambda: FloatRange(0.25, 0.75))
    """Spatial share s of the branch loss weights (s, 1 - s) (`model.branch_loss_weights`)."""
    step_loss_weighting: StrChoice | None = field(
        default_factory=lambda: StrChoice(STEP_WEIGHTINGS)
    )
    """`uniform` or `increasing` per-step loss weights (`model.step_loss_weights`)."""

    def __post_init__(self) -> None:
        parameters = self.parameters()
        for name, domain in _BOUNDS.items():
            numeric = parameters[name]
            assert numeric is None or isinstance(numeric, (IntRange, FloatRange)), name
            _validate_range(name, numeric, *domain)
        for name, allowed in _CHOICES.items():
            choice = parameters[name]
            assert choice is None or isinstance(choice, (BoolChoice, StrChoice)), name
            _validate_choice(name, choice, allowed)
        window_params = (self.temporal_first_window_fraction, self.temporal_window_growth)
        if (window_params[0] is None) != (window_params[1] is None):
            raise ConfigError(
                "space.temporal_first_window_fraction and space.temporal_window_growth: set both "
                "(searched or fixed) or neither; the windows are computed from the pair"
            )

    def parameters(self) -> dict[str, Range | None]:
        """Every parameter by its name (dotted for config fields), in declaration order."""
        return _leaves(self, "")

    def replace(self, changes: dict[str, Range | None]) -> SpaceRanges:
        """A copy with parameters replaced by name: `{"train.optimizer.lr": FloatRange(...)}`."""
        known = self.parameters()
        for name in changes:
            if name not in known:
                raise ConfigError(f"space: no parameter {name!r}; parameters: {', '.join(known)}")
        return _replace_section(self, "", changes)

    def searched(self) -> tuple[str, ...]:
        """Names of the parameters Optuna searches (not fixed, not left out)."""
        return tuple(
            name
            for name, bounds in self.parameters().items()
            if bounds is not None and bounds.fixed is None
        )


def _replace_section(section: Any, prefix: str, changes: dict[str, Range | None]) -> Any:
    """`section` with the changed parameters under `prefix` replaced, validated once."""
    updates: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        name, value = f"{prefix}{f.name}", getattr(section, f.name)
        if isinstance(value, SECTIONS):
            if any(key.startswith(f"{name}.") for key in changes):
                updates[f.name] = _replace_section(value, f"{name}.", changes)
        elif name in changes:
            updates[f.name] = changes[name]
    return dataclasses.replace(section, **updates)


def _leaves(section: Any, prefix: str) -> dict[str, Range | None]:
    leaves: dict[str, Range | None] = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, SECTIONS):
            leaves |= _leaves(value, f"{prefix}{f.name}.")
        else:
            leaves[f"{prefix}{f.name}"] = value
    return leaves


# (minimum, maximum, minimum is exclusive) of each numeric parameter's domain.
_BOUNDS: dict[str, tuple[float | None, float | None, bool]] = {
    "model.spatial_prototypes": (1, None, False),
    "model.temporal_prototypes": (1, None, False),
    "model.steps": (1, ROUNDS, False),
    "model.compression_per_step": (0, None, False),
    "model.logit_scale": (0.0, None, True),
    "train.epochs": (1, None, False),
    "train.optimizer.lr": (0.0, None, True),
    "train.optimizer.weight_decay": (0.0, None, False),
    "temporal_first_window_fraction": (0.0, 1.0, True),
    "temporal_window_growth": (1.0, None, False),
    "spatial_loss_share": (0.0, 1.0, False),
}

_CHOICES: dict[str, tuple[Any, ...]] = {
    "model.compression": (True, False),
    "model.memory": typing.get_args(typing.get_type_hints(ModelConfig)["memory"]),
    "model.gate": typing.get_args(typing.get_type_hints(ModelConfig)["gate"]),
    "step_loss_weighting": STEP_WEIGHTINGS,
}


def _in_domain(value: float, minimum: float | None, maximum: float | None, open_low: bool) -> bool:
    if minimum is not None and (value <= minimum if open_low else value < minimum):
        return False
    return maximum is None or value <= maximum


def _domain_text(minimum: float | None, maximum: float | None, open_low: bool) -> str:
    low = "" if minimum is None else f"{'>' if open_low else '>='} {minimum}"
    high = "" if maximum is None else f"<= {maximum}"
    return " and ".join(part for part in (low, high) if part)


def _validate_range(
    name: str,
    bounds: IntRange | FloatRange | None,
    minimum: float | None,
    maximum: float | None,
    open_low: bool,
) -> None:
    if bounds is None:
        return
    where = f"space.{name}"
    domain = _domain_text(minimum, maximum, open_low)
    for end in ("fixed", "low", "high"):
        value = getattr(bounds, end)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}.{end}={value}: must be a finite number")
    if bounds.fixed is not None:
        if bounds.low is not None or bounds.high is not None:
            raise ConfigError(
                f"{where}: has fixed={bounds.fixed} and low/high; set one or the other"
            )
        if not _in_domain(bounds.fixed, minimum, maximum, open_low):
            raise ConfigError(f"{where}.fixed={bounds.fixed}: must be {domain}")
        return
    if bounds.low is None or bounds.high is None:
        raise ConfigError(
            f"{where}: needs low and high (or fixed: VALUE, or null to keep the base config's value)"
        )
    if bounds.low >= bounds.high:
        raise ConfigError(
            f"{where}: low={bounds.low} >= high={bounds.high}; use low < high, or fixed: {bounds.low}"
        )
    for end in ("low", "high"):
        if not _in_domain(getattr(bounds, end), minimum, maximum, open_low):
            raise ConfigError(f"{where}.{end}={getattr(bounds, end)}: must be {domain}")
    if bounds.log and bounds.low <= 0:
        raise ConfigError(
            f"{where}: log range needs low > 0, got low={bounds.low}; raise low or set log: false"
        )
    if isinstance(bounds, IntRange):
        if bounds.step < 1:
            raise ConfigError(f"{where}.step={bounds.step}: must be >= 1")
        if bounds.log and bounds.step != 1:
            raise ConfigError(f"{where}: log=true needs step=1 (Optuna), got step={bounds.step}")
        if (bounds.high - bounds.low) % bounds.step:
            raise ConfigError(
                f"{where}: high - low = {bounds.high - bounds.low} is not a multiple of "
                f"step={bounds.step}; use high={bounds.low + (bounds.high - bounds.low) // bounds.step * bounds.step}"
            )


def _validate_choice(
    name: str, choice: BoolChoice | StrChoice | None, allowed: tuple[Any, ...]
) -> None:
    if choice is None:
        return
    where = f"space.{name}"
    valid = ", ".join(map(repr, allowed))
    values = (choice.fixed,) if choice.fixed is not None else choice.choices
    if not values:
        raise ConfigError(f"{where}: choices is empty; list some of {valid}, or fixed: VALUE")
    for value in values:
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not a valid choice; use {valid}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where}.choices={list(values)}: lists a value twice")


# --------------------------------------------------------------------------------------------
# The define-by-run function


def _pick(trial: Suggester, name: str, bounds: Range | None) -> Any:
    """Suggest `name` from its range, return its fixed value, or None when left out."""
    if bounds is None:
        return None
    if bounds.fixed is not None:
        return bounds.fixed
    if isinstance(bounds, (IntRange, FloatRange)):
        assert bounds.low is not None and bounds.high is not None  # checked by SpaceRanges
        if isinstance(bounds, IntRange):
            return trial.suggest_int(
                name, bounds.low, bounds.high, step=bounds.step, log=bounds.log
            )
        return trial.suggest_float(name, bounds.low, bounds.high, log=bounds.log)
    return trial.suggest_categorical(name, list(bounds.choices))


def window_schedule(frames: int, fraction: float, growth: float, steps: int) -> tuple[int, ...]:
    """Temporal windows of the last `steps` of the 3-round schedule over `frames` feature frames."""
    windows = [min(frames, max(1, math.floor(fraction * frames + 0.5)))]
    for _ in range(ROUNDS - 1):
        windows.append(min(frames, max(windows[-1], math.floor(windows[-1] * growth + 0.5))))
    return tuple(windows[ROUNDS - steps :])


def step_weights(weighting: str, steps: int) -> tuple[float, ...]:
    """Per-step loss weights summing to 1: `uniform` or `increasing` (1 : 2 : 4)."""
    raw = [1.0] * steps if weighting == "uniform" else [2.0**i for i in range(steps)]
    return tuple(w / sum(raw) for w in raw)


def define_space(trial: Suggester, ranges: SpaceRanges, base: Config) -> dict[str, Any]:
    """Propose one point of the space as dotted `Config` overrides (define-by-run, conditional).

    `base` is the study's base config: its branches, compression and memory settings decide the
    conditionals for parameters left out of the space, and its encoder bounds the windows.
    """
    model = base.model
    parameters = ranges.parameters()
    spatial = model.branches != "temporal"
    temporal = model.branches != "spatial"
    overrides: dict[str, Any] = {}

    def pick(name: str) -> Any:
        return _pick(trial, name, parameters[name])

    def put(key: str) -> Any:
        """Propose the config field `key` (the parameter of the same name)."""
        value = pick(key)
        if value is not None:
            overrides[key] = value
        return value

    steps = put("model.steps")
    num_steps = model.steps if steps is None else steps

    if spatial:
        put("model.spatial_prototypes")
        compression = put("model.compression")
        if model.compression if compression is None else compression:
            put("model.compression_per_step")

    frames = model.encoder.feature_frames(base.data.window)
    if temporal:
        put("model.temporal_prototypes")
        memory = put("model.memory")
        if (model.memory if memory is None else memory) == "gated":
            put("model.gate")
        fraction = pick("temporal_first_window_fraction")
        growth = pick("temporal_window_growth")
        if fraction is not None:
            overrides["model.temporal_windows"] = list(
                window_schedule(frames, fraction, growth, num_steps)
            )
    elif steps is not None:
        # The temporal branch is off: its windows are never read but must match the steps.
        overrides["model.temporal_windows"] = [frames] * num_steps

    if model.branches == "both":
        share = pick("spatial_loss_share")
        if share is not None:
            overrides["model.branch_loss_weights"] = [share, 1.0 - share]

    if num_steps >= 2:
        weighting = pick("step_loss_weighting")
        if weighting is not None:
            overrides["model.step_loss_weights"] = list(step_weights(weighting, num_steps))
    elif steps is not None:
        overrides["model.step_loss_weights"] = [1.0]

    put("model.logit_scale")
    put("train.optimizer.lr")
    put("train.optimizer.weight_decay")
    epochs = put("train.epochs")
    if epochs is not None:
        overrides["train.optimizer.lr_milestones"] = scale_milestones(
            base.train.optimizer.lr_milestones, base.train.epochs, epochs
        )
    return overrides


def max_epochs(ranges: SpaceRanges, base: Config) -> int:
    """The largest `train.epochs` any trial can get (the schedulers' max_t)."""
    epochs = ranges.train.epochs
    if epochs is None:
        return base.train.epochs
    largest = epochs.fixed if epochs.fixed is not None else epochs.high
    assert largest is not None  # checked by SpaceRanges
    return largest


# --------------------------------------------------------------------------------------------
# Validation before any trial starts


def _ends(bounds: IntRange | FloatRange | None) -> tuple[Any, Any] | None:
    """(smallest, largest) value a numeric parameter can take, or None when left out."""
    if bounds is None:
        return None
    if bounds.fixed is not None:
        return bounds.fixed, bounds.fixed
    return bounds.low, bounds.high


def _check_compression(ranges: SpaceRanges, base: Config) -> None:
    model = base.model
    if model.branches == "temporal":
        return
    compression = ranges.model.compression
    if compression is None:
        can_compress = model.compression
    elif compression.fixed is not None:
        can_compress = compression.fixed
    else:
        can_compress = True in compression.choices
    if not can_compress:
        return
    prototypes = _ends(ranges.model.spatial_prototypes) or (model.spatial_prototypes,) * 2
    steps = _ends(ranges.model.steps) or (model.steps,) * 2
    per_step = _ends(ranges.model.compression_per_step) or (model.compression_per_step,) * 2
    kept = prototypes[0] - per_step[1] * steps[1]
    if kept < 1:
        largest = (prototypes[0] - 1) // steps[1]
        raise ConfigError(
            f"space.model.compression_per_step: up to {per_step[1]} dropped per step with steps up to "
            f"{steps[1]} and spatial_prototypes down to {prototypes[0]} leaves each joint {kept} "
            f"prototypes at the last step; use space.model.compression_per_step.high <= {largest} "
            f"or space.model.spatial_prototypes.low >= {per_step[1] * steps[1] + 1}"
        )


def corner_points(ranges: SpaceRanges, base: Config) -> list[dict[str, Any]]:
    """Parameter dicts at the corners of the box: low, high and the worst compression corner
    for the numbers, times every combination of the choices."""
    numeric: dict[str, tuple[Any, Any]] = {}
    choices: dict[str, tuple[Any, ...]] = {}
    for name, bounds in ranges.parameters().items():
        if bounds is None:
            continue
        if isinstance(bounds, (IntRange, FloatRange)):
            numeric[name] = (
                (bounds.fixed, bounds.fixed)
                if bounds.fixed is not None
                else (bounds.low, bounds.high)
            )
        else:
            choices[name] = (bounds.fixed,) if bounds.fixed is not None else bounds.choices
    numeric_corners = [{n: e[0] for n, e in numeric.items()}, {n: e[1] for n, e in numeric.items()}]
    worst = {n: e[1] for n, e in numeric.items()}
    if "model.spatial_prototypes" in numeric:
        worst["model.spatial_prototypes"] = numeric["model.spatial_prototypes"][0]
    numeric_corners.append(worst)
    points = []
    for combination in itertools.product(*choices.values()):
        for corner in numeric_corners:
            points.append({**corner, **dict(zip(choices, combination, strict=True))})
    return points


def check_space(ranges: SpaceRanges, base: Config) -> None:
    """Raise ConfigError when some point of the space would not build a valid Config."""
    _check_compression(ranges, base)
    steps = ranges.model.steps
    if (
        steps is not None
        and base.model.branches != "spatial"
        and ranges.temporal_first_window_fraction is None
    ):
        raise ConfigError(
            "space.temporal_first_window_fraction / space.temporal_window_growth: null while "
            "space.model.steps is set; the temporal windows must follow the steps, so give them ranges "
            "or fixed values (fraction 0.3125, growth 2.0 reproduce the reference (5, 10, 16))"
        )
    if (
        steps is not None
        and ranges.step_loss_weighting is None
        and (_ends(steps) or (0, 0))[1] >= 2
    ):
        raise ConfigError(
            "space.step_loss_weighting: null while space.model.steps is set; the step loss weights must "
            f"follow the steps, so give choices from {list(STEP_WEIGHTINGS)} or fixed: uniform"
        )
    for point in corner_points(ranges, base):
        overrides = define_space(optuna.trial.FixedTrial(point), ranges, base)
        try:
            base.replace(overrides)
        except ConfigError as error:
            raise ConfigError(
                f"space: the corner {point} gives an invalid config ({error}); narrow the ranges "
                "in the spec's `space` section"
            ) from error
