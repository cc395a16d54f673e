"""End to end on a local Ray instance: concurrent trials, ASHA, divergence, MLflow and Optuna."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import mlflow
import optuna
import pytest
import ray
import yaml

from ablations.runner import plan_study
from ablations.spec import load_ablation_spec
from neuron.config import load_config
from search.runner import SearchSetupError, _spec_record, run_search
from search.spec import ConfirmSpec
from search.tracking import MlflowTracker
from search.trainable import SCRATCH_PREFIX
from tests.search.helpers import SPECS, tiny_spec

OBJECTIVE = "val/gzsl_h"


@pytest.fixture(scope="module")
def local_ray():
    """One 2-CPU Ray instance for the module (run_search reuses an initialised Ray)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def study_runs(store: str, name: str, split: str = "synthetic_default"):
    tracker = MlflowTracker(store, "neuron-search")
    study = tracker.find_run({"neuron.search": name, "neuron.role": "study", "neuron.split": split})
    assert study is not None
    return tracker, study, tracker.children(study.info.run_id)


def cache_files(cache: Path) -> set[str]:
    return {
        str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock"
    }


def confirmation_spec_trains_the_top_trials_again(client, study_result, completed, summary):
    """confirm.yaml is an ablation spec whose runs are the study's top completed trials (the best
    as `full`, from MLflow; runners-up as variants) with new seeds: every run's config is its
    trial's config (run.seed aside)."""
    assert len(completed) >= 2, "the test needs two completed trials"
    assert study_result.confirm_path is not None and str(study_result.confirm_path) in summary
    spec = load_ablation_spec(study_result.confirm_path)
    plan = plan_study(spec)
    ranked = sorted(completed, key=lambda c: -c.data.metrics["objective"])[: ConfirmSpec().top]
    assert spec.primary_metric == OBJECTIVE and spec.metrics[0] == OBJECTIVE
    assert len(spec.seeds) == ConfirmSpec().seeds and 0 not in spec.seeds  # the search's seed is 0
    names = [
        "full",
        *(f"rank{k}-{c.data.tags['neuron.trial_id']}" for k, c in enumerate(ranked[1:], 2)),
    ]
    assert [v.name for v in plan.variants] == names
    for name, trial in zip(names, ranked, strict=True):
        cell = next(c for c in plan.cells if c.variant == name)
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(trial.info.run_id, "config.yaml", folder)
            expected = load_config(path).to_dict()
        resolved = plan.config(cell).to_dict()
        for plain in (expected, resolved):
            plain["run"].pop("seed")
        assert resolved == expected, name


@pytest.mark.slow
def test_concurrent_search_with_asha_is_recorded_in_mlflow_and_optuna(
    local_ray, tmp_path, store, tiny_cache
):
    spec = tiny_spec(tmp_path, store, tiny_cache, "num_trials=8")
    before = cache_files(tiny_cache)
    scratch_before = set(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"))
    result = run_search(spec, "asha")
    assert cache_files(tiny_cache) == before  # trials read the driver's caches, never rebuild them
    # fit's scratch folders of stopped trials are removed; at most the last one per actor stays.
    scratch = set(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*")) - scratch_before
    assert len(scratch) <= spec.max_concurrent_trials

    tracker, study, children = study_runs(store, "asha")
    client = mlflow.MlflowClient(store)
    assert study.info.status == "FINISHED" and "mlflow.parentRunId" not in study.data.tags
    assert len(children) == 8
    assert len({c.data.tags["neuron.trial_id"] for c in children}) == 8
    assert all(c.data.tags["mlflow.parentRunId"] == study.info.run_id for c in children)
    assert all(c.info.status == "FINISHED" for c in children)

    # Really concurrent: some two trials ran at the same time.
    spans = sorted((c.info.start_time, c.info.end_time) for c in children)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))

    statuses = {c.data.tags["neuron.trial_id"]: c.data.tags["neuron.status"] for c in children}
    stopped = [
        c for c in children if c.data.tags["neuron.status"].startswith("stopped early at epoch")
    ]
    completed = [c for c in children if c.data.tags["neuron.status"] == "completed"]
    assert stopped, statuses
    assert completed, statuses
    for child in children:
        reached = int(child.data.tags["neuron.epochs_reached"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, OBJECTIVE)]
        assert steps == list(range(1, reached + 1))  # one value per epoch, step = epoch
        assert (
            child.data.params["model.spatial_prototypes"]
            == child.data.params["search.model.spatial_prototypes"]
        )
        assert float(child.data.params["train.optimizer.lr"]) == pytest.approx(
            float(child.data.params["search.train.optimizer.lr"])
        )
        assert child.data.params["run.threads"] == "1"
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"config.yaml"}
    for child in stopped:
        assert int(child.data.tags["neuron.epochs_reached"]) < 4
        assert not any(k.startswith("test/") for k in child.data.metrics)  # never evaluated on test
    for child in completed:
        assert child.data.tags["neuron.epochs_reached"] == "4"
        assert {"test/zsl_top1", "test/gzsl_h", "test/gzsl_seen", "test/gzsl_unseen"} <= set(
            child.data.metrics
        )
        assert child.data.metrics["objective"] == child.data.metrics[f"selected/{OBJECTIVE}"]

    # The study summary.
    artifacts = {a.path for a in client.list_artifacts(study.info.run_id)}
    assert {"best_config.yaml", "results.csv", "results.parquet", "plots"} <= artifacts
    assert "plots/optimization_history.png" in {
        a.path for a in client.list_artifacts(study.info.run_id, "plots")
    }
    best = max(completed, key=lambda c: c.data.metrics["objective"])
    assert study.data.tags["neuron.best_trial_id"] == best.data.tags["neuron.trial_id"]
    (study_result,) = result.studies
    assert (
        study_result.best_config_path.is_file()
        and study_result.best_trial_id == best.data.tags["neuron.trial_id"]
    )
    summary = result.summary()
    assert f"mlflow ui --backend-store-uri {store} --port 5000" in summary
    assert str(study_result.best_config_path) in summary
    confirmation_spec_trains_the_top_trials_again(client, study_result, completed, summary)

    # What the MLflow UI shows, read back from the store: a model-training experiment, trial
    # runs named by number, objective, key hyperparameters and study, and the results table in
    # the study run's description with links to the trials view and the compare view.
    experiment = client.get_experiment(result.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    numbers = set()
    for child in children:
        name = child.info.run_name
        number, *middle, study_name = name.split(" · ")
        assert number.startswith("trial ") and study_name == "asha/synthetic_default", name
        numbers.add(int(number.removeprefix("trial ")))
        assert f"lr {float(child.data.params['search.train.optimizer.lr']):.3g}" in middle, name
        objective = child.data.metrics.get("objective")
        if objective is not None:
            assert middle[0] == f"gzsl_h {objective:.3f}", name
    assert numbers == set(range(1, 9))
    study = client.get_run(study.info.run_id)
    note = study.data.tags["mlflow.note.content"]
    ranked = sorted(
        (c for c in children if "objective" in c.data.metrics),
        key=lambda c: -c.data.metrics["objective"],
    )
    rows = [line for line in note.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| rank | trial | objective | status | epochs | ")
    assert len(rows) - 1 == min(len(ranked), 10)
    assert rows[1].startswith(
        f"| 1 | {ranked[0].data.tags['neuron.trial_id']} | "
        f"{ranked[0].data.metrics['objective']:.4f} | "
    )
    assert "[Compare the trials side by side](http://127.0.0.1:5000/#/compare-runs?runs=" in note
    assert study.data.tags["neuron.compare_url"].count("%22") == 2 * len(ranked) + 2
    assert study_result.compare_url in summary and study_result.trials_url in summary
    view_key = study_result.trials_url.split("viewStateShareKey=")[1].split("&")[0]
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{view_key}"])
    assert view["orderByKey"] == "metrics.`objective`" and view["orderByAsc"] is False
    assert "metrics.`objective`" in view["selectedColumns"]
    assert "params.`search.train.optimizer.lr`" in view["selectedColumns"]

    # Optuna saw stopped trials as PRUNED (with the fidelity) and completed ones with the
    # selected epoch's objective; the study is persisted for optuna-dashboard and --resume.
    optuna_study = optuna.load_study(
        study_name="asha/synthetic_default", storage=result.optuna_storage
    )
    by_ray_id = {t.user_attrs["ray_trial_id"]: t for t in optuna_study.trials}
    assert len(by_ray_id) == 8
    for child in children:
        ot_trial = by_ray_id[child.data.tags["neuron.trial_id"]]
        assert ot_trial.user_attrs["epochs_reached"] == int(
            child.data.tags["neuron.epochs_reached"]
        )
        if child in completed:
            assert ot_trial.state == optuna.trial.TrialState.COMPLETE
            assert ot_trial.value == pytest.approx(child.data.metrics["objective"])
        else:
            # At the epoch it reached, the best objective it had (what ASHA compared).
            assert ot_trial.state == optuna.trial.TrialState.PRUNED
            reached = ot_trial.user_attrs["epochs_reached"]
            assert ot_trial.intermediate_values == {
                reached: pytest.approx(child.data.metrics["objective"])
            }


@pytest.mark.slow
def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on(
    local_ray, tmp_path, store, tiny_cache
):
    # lr up to 1e12: the seeded random start of TPE proposes some trials whose loss becomes NaN.
    spec = tiny_spec(
        tmp_path,
        store,
        tiny_cache,
        "num_trials=4",
        "scheduler.name=none",
        "space.train.optimizer.lr.high=1000000000000.0",
        "max_failures=2",
    )
    run_search(spec, "diverge")
    _, study, children = study_runs(store, "diverge")
    failed = [c for c in children if c.info.status == "FAILED"]
    others = [c for c in children if c.info.status == "FINISHED"]
    assert len(children) == 4 and failed and others
    # A divergence is not a node fault: recorded failed at once, never retried.
    assert all("neuron.recoveries" not in c.data.tags for c in children)
    for child in failed:
        assert child.data.tags["neuron.status"].startswith("failed: DivergenceError: "), (
            child.data.tags
        )
        assert "loss is nan" in child.data.tags["neuron.status"]
        assert float(child.data.params["train.optimizer.lr"]) > 100
    assert all(c.data.tags["neuron.status"] == "completed" for c in others)
    assert study.data.tags["neuron.trials_failed"] == str(len(failed))
    optuna_study = optuna.load_study(
        study_name="diverge/synthetic_default",
        storage=f"sqlite:///{tmp_path / 'out' / 'diverge' / 'optuna.db'}",
    )
    states = [t.state for t in optuna_study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == len(failed)
    assert states.count(optuna.trial.TrialState.COMPLETE) == len(others)


@pytest.mark.slow
def test_a_search_in_which_no_trial_finishes_exits_5_after_its_summary(
    local_ray, tmp_path, store, tiny_cache, capsys
):
    from neuron.cli import main

    code = main(
        [
            "search",
            str(SPECS / "tiny.yaml"),
            f"output_dir={tmp_path / 'out'}",
            f"tracking_uri={store}",
            f"base.overrides.run.cache_dir={tiny_cache}",
            "num_trials=1",
            "scheduler.name=none",
            "space.train.optimizer.lr={low: 1.0e+11, high: 1.0e+12, log: true}",  # diverges
            "--name",
            "nothing",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 5
    assert "no trial finished with a value" in out  # the summary still prints
    assert "error: no trial finished with a value in synthetic_default" in err


def test_a_name_in_use_or_absent_or_a_changed_spec_is_refused_before_launching(tmp_path, store):
    spec = tiny_spec(tmp_path, store, tmp_path / "cache")
    with pytest.raises(SearchSetupError, match="no search named 'ghost'"):
        run_search(spec, "ghost", resume=True)
    with pytest.raises(SearchSetupError, match="--name"):
        run_search(spec, "bad/name")
    record = tmp_path / "out" / "taken" / "search.yaml"
    record.parent.mkdir(parents=True)
    record.write_text(yaml.safe_dump(_spec_record(spec)))
    with pytest.raises(SearchSetupError, match="already exists.*--resume"):
        run_search(spec, "taken")
    with pytest.raises(SearchSetupError, match="num_trials"):
        run_search(spec.with_overrides({"num_trials": 3}), "taken", resume=True)
    # The same name recorded in MLflow by a search with another output_dir.
    MlflowTracker(store, "neuron-search").ensure_run({"neuron.search": "elsewhere"}, "x", None, {})
    with pytest.raises(SearchSetupError, match="already has runs of a search named 'elsewhere'"):
        run_search(spec, "elsewhere")
    assert not (tmp_path / "out" / "elsewhere").exists()


@pytest.mark.slow
def test_hyperband_bohb_pauses_and_resumes_trials_from_their_checkpoints(
    local_ray, tmp_path, store, tiny_cache
):
    spec = tiny_spec(tmp_path, store, tiny_cache, "num_trials=4", "scheduler.name=hyperband_bohb")
    run_search(spec, "bohb")
    _, study, children = study_runs(store, "bohb")
    client = mlflow.MlflowClient(store)
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    experiment = tmp_path / "out" / "bohb" / "synthetic_default"
    resumed = 0
    for child in children:
        lines = (
            (experiment / f"trial_{child.data.tags['neuron.trial_id']}" / "result.json")
            .read_text()
            .splitlines()
        )
        # Tune re-downloads result.json from storage when a paused trial restarts, so lines
        # written before the last sync can be missing: judge continuity on the lines present.
        results = [json.loads(line) for line in lines]
        resumed += any(r["iterations_since_restore"] < r["training_iteration"] for r in results)
        # Continued from its checkpoint, never restarted: the epoch counts on with Tune's
        # iteration (a restart would report epoch 1 at a later iteration).
        assert all(int(r["epoch"]) == r["training_iteration"] for r in results)
        epochs = [int(r["epoch"]) for r in results]
        assert epochs == sorted(set(epochs))
        history = client.get_metric_history(child.info.run_id, "epoch")
        assert sorted(m.step for m in history) == list(range(1, max(epochs) + 1))
    assert resumed >= 1  # HyperBand paused a trial at a rung and resumed it later


@pytest.mark.slow
def test_a_multi_split_search_runs_one_study_per_split_under_one_parent(
    local_ray, tmp_path, store, tiny_cache
):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache, cache)  # synthetic_alt trains its own stage-1 encoder here
    spec = tiny_spec(
        tmp_path,
        store,
        cache,
        "splits=[synthetic_default, synthetic_alt]",
        "num_trials=2",
        "scheduler.name=none",
        "space.train.epochs=2",
    )
    result = run_search(spec, "multi")
    tracker = MlflowTracker(store, "neuron-search")
    top = tracker.find_run({"neuron.search": "multi", "neuron.role": "search"})
    assert (
        top is not None
        and top.info.status == "FINISHED"
        and result.search_run_id == top.info.run_id
    )
    studies = tracker.children(top.info.run_id)
    assert sorted(s.data.tags["neuron.split"] for s in studies) == [
        "synthetic_alt",
        "synthetic_default",
    ]
    unseen = {s.data.tags["neuron.split"]: s.data.tags["neuron.unseen_classes"] for s in studies}
    assert unseen["synthetic_alt"] != unseen["synthetic_default"]
    for study in studies:
        trials = tracker.children(study.info.run_id)
        assert len(trials) == 2 and all(
            t.data.tags["neuron.split"] == study.data.tags["neuron.split"] for t in trials
        )
        assert study.data.tags["neuron.best_trial_id"] in {
            t.data.tags["neuron.trial_id"] for t in trials
        }
    assert [s.split for s in result.studies] == ["synthetic_default", "synthetic_alt"]
    assert all(s.best_config_path.is_file() for s in result.studies)
    assert "splits.json" in {
        a.path for a in mlflow.MlflowClient(store).list_artifacts(top.info.run_id)
    }


def test_the_trial_table_survives_a_trial_that_ended_before_reporting(local_ray, tmp_path, capsys):
    """Tune's sorted table compares the objective of finished trials; one that a spent
    `time_budget_s` ended before its first report has none, and Tune's own CLIReporter raises
    TypeError (None < float). TrialTable leaves the table unsorted then. It sets CLIReporter's
    private `_sort_by_metric` from `_metric`: this fails loudly if Ray renames them."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from search.runner import TrialTable

    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="table")
    reported = Trial("fake", trial_id="reported", stub=True, storage=storage)
    silent = Trial("fake", trial_id="silent", stub=True, storage=storage)
    for trial in (reported, silent):
        trial.storage.trial_dir_name = trial.trial_id
        trial.set_status(Trial.TERMINATED)
    reported.update_last_result({OBJECTIVE: 0.5, "training_iteration": 1})
    table = TrialTable(
        metric_columns=[OBJECTIVE], metric=OBJECTIVE, mode="max", sort_by_metric=True
    )
    table.report([reported, silent], done=True)
    assert not table._sort_by_metric and "reported" in capsys.readouterr().out
    table.report([reported], done=True)  # every finished trial reported: sorted again
    assert table._sort_by_metric
