"""The define-by-run space with real Optuna: ranges, conditionals, validity, reproducibility."""

from __future__ import annotations

import optuna
import pytest

from neuron.config import Config, ConfigError, load_config
from search.space import (
    BoolChoice,
    FloatRange,
    IntRange,
    SpaceRanges,
    StrChoice,
    check_space,
    corner_points,
    define_space,
    max_epochs,
    step_weights,
    window_schedule,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample(ranges: SpaceRanges, base: Config, n: int, seed: int = 0, sampler: str = "random"):
    """(Optuna params, overrides) of n points, told a deterministic objective."""
    chosen = (
        optuna.samplers.RandomSampler(seed=seed)
        if sampler == "random"
        else optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    )
    study = optuna.create_study(sampler=chosen, direction="maximize")
    points = []
    for _ in range(n):
        trial = study.ask()
        overrides = define_space(trial, ranges, base)
        points.append((dict(trial.params), overrides))
        study.tell(trial, float(overrides.get("train.optimizer.lr", 0.1)) * len(overrides))
    return points


@pytest.fixture(scope="module")
def default_base() -> Config:
    return load_config()


@pytest.fixture(scope="module")
def tiny_base() -> Config:
    return load_config("tiny")


@pytest.mark.parametrize("branches", ["both", "spatial", "temporal"])
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_every_sampled_point_is_in_range_and_builds_a_valid_config(default_base, branches, sampler):
    base = default_base.replace({"model.branches": branches})
    ranges = SpaceRanges()
    frames = base.model.encoder.feature_frames(base.data.window)
    # TPE is slower per point; it matters for the conditionals after its random startup.
    for params, overrides in sample(
        ranges, base, 120 if sampler == "random" else 40, sampler=sampler
    ):
        config = base.replace(overrides)  # raises ConfigError if invalid
        for name, value in params.items():
            bounds = ranges.parameters()[name]
            if isinstance(bounds, (IntRange, FloatRange)):
                assert bounds.low <= value <= bounds.high, (name, value)
            else:
                assert value in bounds.choices, (name, value)
        model = config.model
        assert len(model.temporal_windows) == model.steps == len(model.step_loss_weights)
        assert max(model.temporal_windows) <= frames
        assert sum(model.step_loss_weights) == pytest.approx(1.0)
        assert sum(model.branch_loss_weights) == pytest.approx(1.0)


def test_conditional_parameters_appear_only_where_they_apply(default_base):
    seen: dict[str, set] = {}
    for params, overrides in sample(SpaceRanges(), default_base, 200):
        for name in params:
            seen.setdefault(name, set())
        if "model.compression_per_step" in params:
            assert params["model.compression"] is True
        else:
            assert params["model.compression"] is False
            assert "model.compression_per_step" not in overrides
        assert ("model.gate" in params) == (params["model.memory"] == "gated")
        assert ("step_loss_weighting" in params) == (params["model.steps"] >= 2)
        # One name per knob: a parameter that sets a config field is named by its key.
        for name, value in params.items():
            if "." in name:
                assert overrides[name] == value
    # every parameter of the natural space was proposed at least once
    assert set(seen) == set(SpaceRanges().searched())


@pytest.mark.parametrize(
    ("branches", "absent"),
    [
        (
            "spatial",
            {"model.temporal_prototypes", "model.memory", "model.gate", "spatial_loss_share"},
        ),
        (
            "temporal",
            {
                "model.spatial_prototypes",
                "model.compression",
                "model.compression_per_step",
                "spatial_loss_share",
            },
        ),
    ],
)
def test_single_branch_models_do_not_search_the_other_branch(default_base, branches, absent):
    base = default_base.replace({"model.branches": branches})
    for params, _ in sample(SpaceRanges(), base, 40):
        assert not absent & set(params)


def test_fixed_parameters_are_not_searched_and_left_out_ones_keep_the_base(default_base):
    ranges = SpaceRanges().replace(
        {
            "train.optimizer.lr": FloatRange(fixed=0.05),
            "train.epochs": IntRange(fixed=7),
            "train.optimizer.weight_decay": None,
            "model.compression": BoolChoice(fixed=False),
        }
    )
    searched = ranges.searched()
    assert "train.optimizer.lr" not in searched and "train.optimizer.weight_decay" not in searched
    for params, overrides in sample(ranges, default_base, 20):
        assert "train.optimizer.lr" not in params and "model.compression_per_step" not in params
        assert overrides["train.optimizer.lr"] == 0.05 and overrides["train.epochs"] == 7
        assert overrides["model.compression"] is False
        assert "train.optimizer.weight_decay" not in overrides
        # The default milestones (4, 20) of 30 epochs, rescaled to 7 epochs: round(0.93), round(4.67).
        assert overrides["train.optimizer.lr_milestones"] == [1, 5]
        assert default_base.replace(overrides).train.optimizer.lr_milestones == (1, 5)


def test_window_schedule_reproduces_the_reference_and_follows_the_steps():
    assert window_schedule(16, 5 / 16, 2.0, 3) == (5, 10, 16)
    assert window_schedule(16, 5 / 16, 2.0, 2) == (10, 16)  # steps align with the last rounds
    assert window_schedule(16, 5 / 16, 2.0, 1) == (16,)
    assert window_schedule(16, 0.25, 1.0, 3) == (4, 4, 4)
    assert window_schedule(8, 1.0, 2.5, 3) == (8, 8, 8)
    assert window_schedule(8, 0.01, 1.0, 3) == (1, 1, 1)


def test_step_weights_uniform_and_increasing():
    assert step_weights("uniform", 3) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert step_weights("increasing", 3) == pytest.approx((1 / 7, 2 / 7, 4 / 7))  # 0.125:0.25:0.5
    assert step_weights("increasing", 2) == pytest.approx((1 / 3, 2 / 3))
    assert step_weights("increasing", 1) == (1.0,)


def test_seeded_sampler_is_reproducible_and_seeds_differ(tiny_base):
    ranges = SpaceRanges().replace(
        {
            "model.spatial_prototypes": IntRange(8, 12, step=2),
            "model.temporal_prototypes": IntRange(4, 12, step=4),
            "model.compression_per_step": IntRange(1, 2),
        }
    )
    first = sample(ranges, tiny_base, 15, seed=7, sampler="tpe")
    again = sample(ranges, tiny_base, 15, seed=7, sampler="tpe")
    other = sample(ranges, tiny_base, 15, seed=8, sampler="tpe")
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"train.optimizer.lr": FloatRange(0.3, 0.01, log=True)},
            "space.train.optimizer.lr: low=0.3 >= high=0.01",
        ),
        (
            {"train.optimizer.lr": FloatRange(0.0, 0.1, log=True)},
            "space.train.optimizer.lr.low=0.0: must be > 0.0",
        ),
        (
            {"train.optimizer.weight_decay": FloatRange(0.0, 0.1, log=True)},
            "log range needs low > 0",
        ),
        (
            {"model.spatial_prototypes": IntRange(40, 150, step=20)},
            "not a multiple of step=20; use high=140",
        ),
        ({"model.steps": IntRange(1, 4)}, "space.model.steps.high=4: must be >= 1 and <= 3"),
        ({"temporal_first_window_fraction": FloatRange(0.2, 1.5)}, "must be > 0.0 and <= 1.0"),
        ({"model.gate": StrChoice(("relu_sigmoid", "tanh"))}, "'tanh' is not a valid choice"),
        ({"model.memory": StrChoice(())}, "choices is empty"),
        ({"train.optimizer.lr": FloatRange(0.01, 0.1, fixed=0.05)}, "set one or the other"),
        ({"train.epochs": IntRange(low=3)}, "needs low and high"),
        ({"temporal_window_growth": None}, "set both (searched or fixed) or neither"),
    ],
)
def test_invalid_ranges_are_rejected_with_the_field_named(change, message):
    with pytest.raises(ConfigError) as error:
        SpaceRanges().replace(change)
    assert message in str(error.value)


def test_compression_dropping_more_prototypes_than_exist_is_rejected_before_any_trial(default_base):
    ranges = SpaceRanges().replace({"model.compression_per_step": IntRange(4, 14)})
    with pytest.raises(ConfigError) as error:
        check_space(ranges, default_base)
    text = str(error.value)
    assert "space.model.compression_per_step" in text and "high <= 13" in text
    # Without compression the same range is harmless.
    check_space(ranges.replace({"model.compression": BoolChoice(fixed=False)}), default_base)
    # Fewer steps make it valid too: 14 * 2 < 40.
    check_space(ranges.replace({"model.steps": IntRange(1, 2)}), default_base)


def test_corners_cover_every_choice_and_the_worst_compression_corner(default_base):
    points = corner_points(SpaceRanges(), default_base)
    assert {p["model.memory"] for p in points} == {"gated", "replace"}
    assert {p["model.compression"] for p in points} == {True, False}
    assert any(
        p["model.spatial_prototypes"] == 40
        and p["model.steps"] == 3
        and p["model.compression_per_step"] == 13
        for p in points
    )


def test_corner_check_catches_an_invalid_config_from_the_base(tiny_base):
    # A base config with 4 feature frames is fine; a spatial base of 3 prototypes and a fixed
    # compression of 1 per step over 3 steps is not, and no range of the space is to blame.
    base = tiny_base.replace({"model.spatial_prototypes": 3, "model.compression_per_step": 0})
    ranges = SpaceRanges().replace(
        {
            "model.spatial_prototypes": None,
            "model.compression_per_step": IntRange(fixed=1),
            "model.steps": IntRange(1, 3),
        }
    )
    with pytest.raises(ConfigError, match="compression_per_step"):
        check_space(ranges, base)


def test_steps_without_window_or_weighting_parameters_are_rejected(default_base):
    no_windows = SpaceRanges().replace(
        {"temporal_first_window_fraction": None, "temporal_window_growth": None}
    )
    with pytest.raises(ConfigError, match="windows must follow the steps"):
        check_space(no_windows, default_base)
    with pytest.raises(ConfigError, match="step loss weights must follow the steps"):
        check_space(SpaceRanges().replace({"step_loss_weighting": None}), default_base)
    # With steps left out, the base windows and weights stay valid.
    check_space(
        no_windows.replace({"model.steps": None, "step_loss_weighting": None}), default_base
    )


def test_max_epochs_is_the_largest_epoch_count_a_trial_can_get(default_base):
    assert max_epochs(SpaceRanges(), default_base) == default_base.train.epochs
    assert max_epochs(SpaceRanges().replace({"train.epochs": IntRange(2, 9)}), default_base) == 9
    assert max_epochs(SpaceRanges().replace({"train.epochs": IntRange(fixed=4)}), default_base) == 4
