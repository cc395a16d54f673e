"""The base of a study can be the best trial of a finished search, found in MLflow."""

from __future__ import annotations

import pytest

from ablations.runner import AblationSetupError, plan_study
from ablations.spec import load_ablation_spec
from neuron.config import dump_yaml, load_config
from search.tracking import MlflowTracker


@pytest.fixture(scope="module")
def finished_search(ablation_store):
    """A search study run in MLflow as `neuron search` leaves it: its best trial's run holds the
    resolved config (config.yaml), the study run names it (neuron.best_run_id)."""
    tracker = MlflowTracker(ablation_store, "neuron-search")
    best = load_config("tiny", {"model.hidden": 24, "train.optimizer.lr": 0.07})
    trial, _ = tracker.ensure_run(
        {"neuron.search": "winner", "neuron.trial_id": "t1"},
        "synthetic_default/t1",
        None,
        {"neuron.role": "trial"},
    )
    tracker.client.log_text(trial, dump_yaml(best), "config.yaml")
    study, _ = tracker.ensure_run(
        {"neuron.search": "winner", "neuron.role": "study", "neuron.split": "synthetic_default"},
        "winner/synthetic_default",
        None,
        {"neuron.best_run_id": trial},
    )
    return {"study": study, "trial": trial}


def spec_for(tmp_path, store, reference):
    path = tmp_path / "spec.yaml"
    path.write_text(
        f"base: {{search: {reference}, overrides: {{train.epochs: 1, train.optimizer.lr_milestones: []}}}}\n"
        "variants:\n  no-memory: {model.memory: replace}\nseeds: [0, 1]\n"
        f"tracking_uri: {store}\n"
    )
    return load_ablation_spec(path)


@pytest.mark.parametrize("reference", ["winner", "study", "trial"])
def test_base_from_a_finished_search(tmp_path, ablation_store, finished_search, reference):
    reference = finished_search.get(reference, reference)
    plan = plan_study(spec_for(tmp_path, ablation_store, reference))
    config = plan.config(plan.cells[0])
    assert (config.model.hidden, config.train.optimizer.lr) == (24, 0.07)
    assert config.train.epochs == 1  # base.overrides apply on top of the search's config
    assert finished_search["trial"] in plan.base_source


def test_unknown_search_is_a_clear_error(tmp_path, ablation_store, finished_search):
    with pytest.raises(AblationSetupError, match="base.search='nope': no search run or study"):
        plan_study(spec_for(tmp_path, ablation_store, "nope"))
