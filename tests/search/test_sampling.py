"""How a search proposes trials (`sampler`) and what its scheduler compares (`ranking_metric`)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.runner import make_sampler, make_scheduler, ranking_metric
from search.spec import SamplerSpec, load_search_spec

SPECS = Path(__file__).resolve().parents[2] / "search" / "specs"


def first_points(sampler: optuna.samplers.BaseSampler) -> list[float]:
    study = optuna.create_study(sampler=sampler)
    return [study.ask().suggest_float("x", 0.0, 1.0) for _ in range(3)]


def test_the_sampler_spec_builds_the_seeded_sampler_it_names() -> None:
    tpe = make_sampler(SamplerSpec(startup_trials=4), seed=3)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._n_startup_trials == 4 and not tpe._multivariate
    joint = make_sampler(SamplerSpec(startup_trials=2, multivariate=True), seed=3)
    assert isinstance(joint, optuna.samplers.TPESampler)
    assert joint._multivariate and joint._group
    random = make_sampler(SamplerSpec(name="random"), seed=3)
    assert isinstance(random, optuna.samplers.RandomSampler)
    for spec in (SamplerSpec(), SamplerSpec(name="random")):
        same = first_points(make_sampler(spec, seed=3))
        assert same == first_points(make_sampler(spec, seed=3))
        assert same != first_points(make_sampler(spec, seed=4))


def test_the_quick_spec_lets_tpe_propose_most_of_its_trials() -> None:
    spec = load_search_spec(SPECS / "quick.yaml")
    assert spec.sampler.name == "tpe"
    assert spec.sampler.startup_trials < spec.num_trials // 2


@pytest.mark.parametrize(
    ("objective", "compared"),
    [
        # The objective selects the epoch: compare the selection so far.
        ("val/gzsl_h", "selected/val/gzsl_h"),
        ("val/zsl_top1", "selected/val/zsl_top1"),
        # It cannot (not a selection metric): compare the rung epoch's value.
        ("val/zsl_mean_class", "val/zsl_mean_class"),
    ],
)
def test_schedulers_compare_the_selection_so_far_when_the_objective_selects(
    objective: str, compared: str
) -> None:
    spec = load_search_spec(SPECS / "quick.yaml", [f"objective.metric={objective}"])
    assert ranking_metric(spec) == compared
    for name in ("asha", "hyperband_bohb"):
        scheduler = make_scheduler(spec.with_overrides({"scheduler.name": name}), epochs=15)
        assert scheduler.metric == compared
