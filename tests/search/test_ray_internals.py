"""`NeuronOptunaSearch` builds on private state of Ray's `OptunaSearch` (`_ot_study`,
`_ot_trials`, `_completed_trials`); pyproject.toml pins the tested Ray range. This test drives a
real searcher through suggest → result → complete and fails loudly when a Ray release renames,
retypes or stops maintaining that state: fix search/runner.py before widening the pin."""

from __future__ import annotations

import functools

import optuna
import pytest

from neuron.config import load_config
from search.runner import NeuronOptunaSearch, make_sampler, suggest
from search.space import SpaceRanges
from search.spec import SamplerSpec


def in_memory_searcher(metric: str) -> NeuronOptunaSearch:
    """A searcher over the tiny config's default space, its study in memory, TPE seeded 0."""
    return NeuronOptunaSearch(
        space=functools.partial(suggest, ranges=SpaceRanges(), base=load_config("tiny")),
        metric=metric,
        mode="max",
        sampler=make_sampler(SamplerSpec(startup_trials=3), seed=0),
        study_name="internals",
        storage=optuna.storages.InMemoryStorage(),
    )


def test_the_private_optuna_search_state_we_use_is_still_there() -> None:
    searcher = in_memory_searcher("val/zsl_top1")
    for name in ("_ot_study", "_ot_trials", "_completed_trials"):
        assert hasattr(searcher, name), f"ray.tune OptunaSearch no longer has {name}"
    assert isinstance(searcher._ot_study, optuna.Study)

    config = searcher.suggest("trial-a")
    assert config is not None and "overrides" in config
    assert set(searcher._ot_trials) == {"trial-a"}
    assert isinstance(searcher._ot_trials["trial-a"], optuna.Trial)
    assert isinstance(searcher._completed_trials, set) and not searcher._completed_trials

    searcher.on_trial_result("trial-a", {"epoch": 1, "training_iteration": 1, "val/zsl_top1": 0.4})
    final = {"epoch": 3, "training_iteration": 3, "val/zsl_top1": 0.5, "best_epoch": 2.0}
    searcher.on_trial_complete("trial-a", final | {"selected/val/zsl_top1": 0.6})
    assert searcher._completed_trials == {"trial-a"}
    (told,) = searcher._ot_study.trials
    # Our override: the selected epoch's objective, not the last epoch's.
    assert told.state == optuna.trial.TrialState.COMPLETE and told.value == pytest.approx(0.6)
    # Telling the same trial again (a restored driver) changes nothing.
    searcher.on_trial_complete("trial-a", final | {"selected/val/zsl_top1": 0.1})
    assert searcher._ot_study.trials[0].value == pytest.approx(0.6)


def test_a_stopped_trial_is_pruned_at_the_best_objective_it_reached() -> None:
    searcher = in_memory_searcher("val/gzsl_h")
    searcher.suggest("trial-a")
    searcher.on_trial_result(
        "trial-a",
        {"epoch": 1, "training_iteration": 1, "val/gzsl_h": 0.5, "selected/val/gzsl_h": 0.5},
    )
    # Tune hands the result that made the scheduler stop the trial only to on_trial_complete.
    last = {"epoch": 2, "training_iteration": 2, "val/gzsl_h": 0.3, "selected/val/gzsl_h": 0.5}
    searcher.on_trial_complete("trial-a", last)
    assert searcher._ot_study is not None
    (told,) = searcher._ot_study.trials
    assert told.state == optuna.trial.TrialState.PRUNED
    assert told.intermediate_values == {2: pytest.approx(0.5)}
    assert told.user_attrs["status"] == "stopped early at epoch 2"
