"""The MLflow layer against a real MLflow SQLite store, driven with real Tune `Trial` objects."""

from __future__ import annotations

import dataclasses
import http.server
import pickle
import socket
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from ray.tune.experiment import Trial

from ablations.spec import load_ablation_spec
from neuron.config import load_config
from search.report import confirmation_spec
from search.tracking import (
    MlflowTracker,
    StudyInfo,
    TrackingCallback,
    TrackingError,
    check_tracking_uri,
    error_reason,
)
from tests.search.helpers import mlflow_server

optuna.logging.set_verbosity(optuna.logging.WARNING)
OBJECTIVE = "val/gzsl_h"


class CountingClient(mlflow.MlflowClient):
    """The real client, counting its log_batch requests."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.batches = 0

    def log_batch(self, *args, **kwargs):
        self.batches += 1
        return super().log_batch(*args, **kwargs)


def study_info(
    tmp_path: Path,
    split: str = "synthetic_default",
    search: str = "s1",
    time_budget_s: float | None = None,
) -> StudyInfo:
    base = load_config("tiny")
    names = tuple(f"class {i}" for i in range(8))
    return StudyInfo(
        search_name=search,
        split=split,
        dataset="synthetic",
        class_names=names,
        training_classes=(0, 1, 2, 3, 4),
        validation_classes=(5,),
        unseen_classes=(6, 7),
        objective=OBJECTIVE,
        mode="max",
        base_config=base.to_dict(),
        optuna_storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        output_dir=str(tmp_path / search / split),
        settings={"num_trials": 3, "scheduler": {"name": "asha"}},
        time_budget_s=time_budget_s,
    )


def make_trial(trial_id: str, lr: float) -> Trial:
    return Trial(
        "train_trial",
        config={
            "train.optimizer.lr": lr,
            "overrides": {"train.optimizer.lr": lr, "model.spatial_prototypes": 10},
        },
        trial_id=trial_id,
        stub=True,
    )


def epoch_result(epoch: int, value: float, final: bool = False) -> dict:
    result = {
        "epoch": float(epoch),
        "train/loss": 2.0 / epoch,
        OBJECTIVE: value,
        "val/zsl_top1": 0.5,
        "training_iteration": epoch,
        "time_this_iter_s": 0.1,
        "config": {"train.optimizer.lr": 0.1},
        "hostname": "node",
        "timestamp": time.time(),
    }
    if final:
        result |= {
            "best_epoch": 2.0,
            f"selected/{OBJECTIVE}": 0.75,
            "test/zsl_top1": 0.4,
            "test/gzsl_h": 0.3,
        }
    return result


def report(callback: TrackingCallback, trial: Trial, results: list[dict]) -> None:
    for result in results:
        trial.update_last_result(result)
        callback.on_trial_result(0, [trial], trial, result)


def test_check_tracking_uri_accepts_sqlite_and_creates_the_store(mlflow_template):
    # the session fixture ran check_tracking_uri on a path that did not exist
    assert mlflow_template.is_file() and mlflow_template.stat().st_size > 0
    assert mlflow.MlflowClient(f"sqlite:///{mlflow_template}").search_experiments()


def test_check_tracking_uri_rejects_unusable_stores_quickly(tmp_path):
    (tmp_path / "a_file").write_text("")
    cases = [
        (f"sqlite:///{tmp_path / 'a_file' / 'mlflow.db'}", "cannot create the folder"),
        (str(tmp_path / "mlruns"), "MLflow 3 refuses file stores"),
        (f"file://{tmp_path / 'mlruns'}", "MLflow 3 refuses file stores"),
    ]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    cases.append((f"http://127.0.0.1:{port}", "no MLflow server answers"))
    started = time.monotonic()
    for uri, message in cases:
        with pytest.raises(TrackingError, match=message):
            check_tracking_uri(uri)
    assert time.monotonic() - started < 15


def test_check_tracking_uri_rejects_a_server_that_is_not_mlflow():
    class NotMlflow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            return None

    server = http.server.HTTPServer(("127.0.0.1", 0), NotMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(TrackingError, match="not OK; is it an MLflow server"):
            check_tracking_uri(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()


def test_error_reason_is_the_innermost_exception_line():
    text = (
        "Failure # 1 (occurred at 2026-01-01)\n"
        "ray::ImplicitFunc.train() (pid=12, ip=10.0.0.1)\n"
        '  File "neuron/train.py", line 686, in train_one_epoch\n'
        "    raise DivergenceError(\n"
        "neuron.optim.DivergenceError: epoch 2: the stage-2 loss is nan; lower train.lr\n"
    )
    assert error_reason(text) == "DivergenceError: epoch 2: the stage-2 loss is nan; lower train.lr"
    assert error_reason("") == "unknown error"


def test_trial_runs_nest_under_the_study_with_params_batched_metrics_tags_and_config(
    store, tmp_path
):
    tracker = MlflowTracker(store, "tracking-test")
    tracker._client = CountingClient(store)
    study = study_info(tmp_path)
    study_run = tracker.start_study(study, None)
    callback = TrackingCallback(tracker, study, study_run)
    trial = make_trial("aaaa0001", 0.05)
    callback.on_trial_start(0, [trial], trial)
    before = tracker.client.batches
    report(
        callback,
        trial,
        [epoch_result(1, 0.5), epoch_result(2, 0.75), epoch_result(3, 0.6, final=True)],
    )
    assert tracker.client.batches - before == 3  # one request per result
    trial.set_status(Trial.TERMINATED)
    callback.on_trial_complete(0, [trial], trial)

    client = mlflow.MlflowClient(store)
    run = client.get_run(callback.run_id(trial))
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["mlflow.parentRunId"] == study_run
    assert tags["neuron.trial_id"] == "aaaa0001" and tags["neuron.study"] == "s1/synthetic_default"
    assert tags["neuron.status"] == "completed" and tags["neuron.epochs_reached"] == "3"
    assert tags["neuron.dataset"] == "synthetic" and tags["neuron.split"] == "synthetic_default"
    assert tags["neuron.unseen_classes"] == "[6, 7]"
    assert tags["neuron.unseen_class_names"] == '["class 6", "class 7"]'
    assert tags["neuron.seen_classes"] == "[0, 1, 2, 3, 4, 5]"
    assert tags["neuron.version"]
    assert run.info.status == "FINISHED"
    assert params["train.optimizer.lr"] == "0.05" and params["model.spatial_prototypes"] == "10"
    assert params["model.temporal_windows"] == "[2, 4, 8]"
    assert params["search.train.optimizer.lr"] == "0.05"  # one name: searched value of the param
    assert (
        "config" not in params and "hostname" not in metrics and "training_iteration" not in metrics
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, OBJECTIVE)] == [1, 2, 3]
    assert metrics["test/zsl_top1"] == 0.4
    assert metrics["objective"] == 0.75  # the selected epoch's value, not the last epoch's
    assert metrics["fidelity/epochs"] == 3
    config_yaml = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    assert yaml.safe_load(config_yaml.read_text())["train"]["optimizer"]["lr"] == 0.05


def test_a_restored_callback_reattaches_without_duplicate_runs_or_metrics(store, tmp_path):
    tracker = MlflowTracker(store, "tracking-test")
    study = study_info(tmp_path)
    study_run = tracker.start_study(study, None)
    callback = TrackingCallback(tracker, study, study_run)
    trial = make_trial("bbbb0002", 0.1)
    callback.on_trial_start(0, [trial], trial)
    report(callback, trial, [epoch_result(1, 0.2), epoch_result(2, 0.3)])

    # The driver dies; Tune restores the pickled callback and replays the trial from epoch 2.
    restored = pickle.loads(pickle.dumps(callback))
    assert tracker.start_study(study, None) == study_run  # same parent, found by its tags
    restored.on_trial_restore(0, [trial], trial)
    report(restored, trial, [epoch_result(2, 0.3), epoch_result(3, 0.4)])
    trial.set_status(Trial.TERMINATED)
    restored.on_trial_complete(0, [trial], trial)

    children = tracker.children(study_run)
    assert len(children) == 1
    history = tracker.client.get_metric_history(children[0].info.run_id, "epoch")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert children[0].data.tags["neuron.status"] == "stopped early at epoch 3"
    assert children[0].data.metrics["objective"] == 0.4  # best reached, no selection happened


def test_study_end_leaves_no_running_child_and_writes_the_summary(store, tmp_path):
    tracker = MlflowTracker(store, "tracking-test")
    study = study_info(tmp_path, time_budget_s=0.001)  # the budget ends the study
    study_run = tracker.start_study(study, None)
    callback = TrackingCallback(tracker, study, study_run)
    callback.setup(total_num_samples=4)

    completed, stopped, failed, running = (
        make_trial(f"cccc000{i}", 0.01 * (i + 1)) for i in range(4)
    )
    for trial in (completed, stopped, failed, running):
        callback.on_trial_start(0, [trial], trial)
    report(
        callback,
        completed,
        [epoch_result(1, 0.5), epoch_result(2, 0.75), epoch_result(3, 0.6, final=True)],
    )
    completed.set_status(Trial.TERMINATED)
    callback.on_trial_complete(0, [completed], completed)
    report(callback, stopped, [epoch_result(1, 0.1)])
    stopped.set_status(Trial.TERMINATED)
    callback.on_trial_complete(0, [stopped], stopped)
    report(callback, failed, [epoch_result(1, 0.2)])
    failed.set_status(Trial.ERROR)
    callback.finish_trial(failed, "failed: DivergenceError: epoch 2: loss is nan", "FAILED")
    report(callback, running, [epoch_result(1, 0.3), epoch_result(2, 0.35)])
    running.set_status(Trial.RUNNING)  # still running when the time budget ends the study
    # A child created by a driver that died before Tune recorded its trial.
    orphan, _ = tracker.ensure_run(
        {"neuron.study": study.study_name, "neuron.trial_id": "dead0000"}, "orphan", study_run, {}
    )

    optuna_study = optuna.create_study(
        study_name=study.study_name, storage=study.optuna_storage, direction="maximize"
    )
    for lr, value in ((0.01, 0.75), (0.02, 0.5), (0.03, 0.6)):
        optuna_study.enqueue_trial({"train.optimizer.lr": lr, "model.steps": 2})
        trial = optuna_study.ask()
        trial.suggest_float("train.optimizer.lr", 0.001, 0.1, log=True)
        trial.suggest_int("model.steps", 1, 3)
        optuna_study.tell(trial, value)
    left_running = optuna_study.ask()

    trials = [completed, stopped, failed, running]
    callback.on_experiment_end(trials)

    client = mlflow.MlflowClient(store)
    children = {r.data.tags["neuron.trial_id"]: r for r in tracker.children(study_run)}
    assert {r.info.status for r in children.values()} <= {"FINISHED", "FAILED", "KILLED"}
    assert children["cccc0000"].data.tags["neuron.status"] == "completed"
    assert children["cccc0001"].data.tags["neuron.status"] == "stopped early at epoch 1"
    assert children["cccc0002"].info.status == "FAILED"
    assert children["cccc0002"].data.tags["neuron.status"].startswith("failed: DivergenceError")
    assert (
        children["cccc0003"]
        .data.tags["neuron.status"]
        .startswith("stopped early at epoch 2 (the study ended")
    )
    assert (
        children["dead0000"].info.status == "KILLED" and orphan == children["dead0000"].info.run_id
    )
    assert optuna_study.trials[left_running.number].state == optuna.trial.TrialState.FAIL

    parent = client.get_run(study_run)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["neuron.best_trial_id"] == "cccc0000"
    assert parent.data.tags["neuron.trials_completed"] == "1"
    assert parent.data.tags["neuron.trials_failed"] == "1"
    assert parent.data.metrics["best/objective"] == 0.75
    assert parent.data.metrics["best/test/zsl_top1"] == 0.4
    artifacts = {a.path for a in client.list_artifacts(study_run)}
    assert {
        "best_config.yaml",
        "results.csv",
        "results.parquet",
        "plots",
        "base_config.yaml",
    } <= artifacts
    plots = {a.path for a in client.list_artifacts(study_run, "plots")}
    assert plots == {
        "plots/optimization_history.png",
        "plots/param_importances.png",
        "plots/parallel_coordinate.png",
    }
    output = Path(study.output_dir)
    table = pd.read_parquet(output / "results.parquet")
    assert len(table) == 5 and set(table["trial_id"]) == {*(t.trial_id for t in trials), "dead0000"}
    assert table.set_index("trial_id").loc["cccc0000", "search.train.optimizer.lr"] == 0.01
    best = load_config(output / "best_config.yaml")
    assert best.train.optimizer.lr == 0.01 and best.model.spatial_prototypes == 10
    assert "neuron train" in (output / "best_config.yaml").read_text().splitlines()[1]


def test_a_multi_split_search_nests_one_study_per_split_under_one_parent(store, tmp_path):
    tracker = MlflowTracker(store, "tracking-test")
    top = tracker.start_search("multi", ("synthetic_default", "synthetic_alt"), {"num_trials": 2})
    studies = [
        tracker.start_study(study_info(tmp_path, split, "multi"), top)
        for split in ("synthetic_default", "synthetic_alt")
    ]
    assert len(set(studies)) == 2
    assert {r.info.run_id for r in tracker.children(top)} == set(studies)
    assert tracker.start_search("multi", ("synthetic_default", "synthetic_alt"), {}) == top
    assert tracker.start_study(study_info(tmp_path, "synthetic_alt", "multi"), top) == studies[1]


def test_an_interrupted_study_is_suspended_and_reopened_by_the_resume(store, tmp_path):
    tracker = MlflowTracker(store, "tracking-test")
    study = study_info(tmp_path, search="interrupted")
    study_run = tracker.start_study(study, None)
    callback = TrackingCallback(tracker, study, study_run)
    callback.setup(total_num_samples=3)
    done, running = make_trial("eeee0001", 0.01), make_trial("eeee0002", 0.02)
    for trial in (done, running):
        callback.on_trial_start(0, [trial], trial)
    report(
        callback,
        done,
        [epoch_result(1, 0.5), epoch_result(2, 0.7), epoch_result(3, 0.6, final=True)],
    )
    done.set_status(Trial.TERMINATED)
    callback.on_trial_complete(0, [done], done)
    report(callback, running, [epoch_result(1, 0.3), epoch_result(2, 0.4)])
    running.set_status(Trial.PENDING)  # Ctrl-C: Tune saved it to resume later
    callback.on_experiment_end([done, running])

    client = mlflow.MlflowClient(store)
    parent = client.get_run(study_run)
    assert parent.info.status == "KILLED" and "--resume" in parent.data.tags["neuron.status"]
    assert "best_config.yaml" not in {a.path for a in client.list_artifacts(study_run)}
    children = {r.data.tags["neuron.trial_id"]: r for r in tracker.children(study_run)}
    assert children["eeee0002"].info.status == "KILLED"
    assert (
        children["eeee0002"].data.tags["neuron.status"]
        == "interrupted at epoch 2 (continue with --resume)"
    )
    assert children["eeee0001"].data.tags["neuron.status"] == "completed"

    # --resume: the same parent and child are re-opened, then finished for real.
    assert tracker.start_study(study, None) == study_run
    restored = pickle.loads(pickle.dumps(callback))
    restored.setup(total_num_samples=3)
    restored.on_trial_restore(0, [running], running)
    assert client.get_run(children["eeee0002"].info.run_id).info.status == "RUNNING"
    report(restored, running, [epoch_result(3, 0.5, final=True)])
    running.set_status(Trial.TERMINATED)
    restored.on_trial_complete(0, [running], running)
    third = make_trial("eeee0003", 0.03)
    restored.on_trial_start(0, [third], third)
    report(
        restored,
        third,
        [epoch_result(1, 0.1), epoch_result(2, 0.2), epoch_result(3, 0.3, final=True)],
    )
    third.set_status(Trial.TERMINATED)
    restored.on_trial_complete(0, [third], third)
    restored.on_experiment_end([done, running, third])
    assert client.get_run(study_run).info.status == "FINISHED"
    assert len(tracker.children(study_run)) == 3


@pytest.mark.slow
def test_a_loopback_tracking_server_receives_runs_metrics_and_artifacts(tmp_path, mlflow_template):
    with mlflow_server(tmp_path, mlflow_template) as uri:
        tracker = MlflowTracker(uri, "server-test")
        study = study_info(tmp_path, search="served")
        study_run = tracker.start_study(study, None)
        callback = TrackingCallback(tracker, study, study_run)
        trial = make_trial("ffff0001", 0.05)
        callback.on_trial_start(0, [trial], trial)
        report(callback, trial, [epoch_result(1, 0.5), epoch_result(2, 0.7, final=True)])
        trial.set_status(Trial.TERMINATED)
        callback.on_trial_complete(0, [trial], trial)

        client = mlflow.MlflowClient(uri)
        run = client.get_run(callback.run_id(trial))
        assert run.info.status == "FINISHED" and run.data.params["train.optimizer.lr"] == "0.05"
        assert [m.step for m in client.get_metric_history(run.info.run_id, OBJECTIVE)] == [1, 2]
        config_yaml = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
        assert yaml.safe_load(Path(config_yaml).read_text())["train"]["optimizer"]["lr"] == 0.05
        assert list((tmp_path / "artifacts").rglob("config.yaml"))  # stored by the server


def test_plots_are_small_images_and_missing_importances_are_explained(tmp_path):
    from search.report import optuna_plots, save_plot

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(lambda trial: trial.suggest_float("lr", 0.01, 0.1), n_trials=1)
    import matplotlib

    style = dict(matplotlib.rcParams)
    figures, missing = optuna_plots(study)
    assert dict(matplotlib.rcParams) == style  # Optuna's ggplot style stays in the plots
    assert set(figures) == {"optimization_history", "parallel_coordinate"}
    assert missing == (
        "parameter importances not computed: needs at least 2 completed trials with different "
        "objective values (1 completed, 1 distinct values)"
    )
    study.optimize(lambda trial: trial.suggest_float("lr", 0.01, 0.1), n_trials=3)
    figures, missing = optuna_plots(study)
    assert missing is None and "param_importances" in figures
    for name, axes in figures.items():
        save_plot(axes, tmp_path / f"{name}.png")
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and 5_000 < len(data) < 400_000


def test_the_confirmation_spec_lists_what_each_runner_up_changes(tmp_path):
    """Runners-up are variants of the best trial: only the searched keys where they differ, a
    conditional key the best set and a runner-up did not at the base config's value; with fewer
    than two trials, or an objective an ablation report does not compare, there is none."""
    study = study_info(tmp_path)
    base = load_config("tiny")
    best = {"train.optimizer.lr": 0.05, "model.memory": "gated", "model.gate": "sigmoid"}
    second = {"train.optimizer.lr": 0.02, "model.memory": "gated", "model.gate": "sigmoid"}
    third = {"train.optimizer.lr": 0.05, "model.memory": "replace"}  # no gate when replacing
    ranked = [("b1", best), ("s2", second), ("t3", third), ("f4", second)]
    text = confirmation_spec(study, "sqlite:////x.db", "neuron-search", "run0", ranked)
    assert text is not None and text.startswith("# Are the best trials")
    spec = yaml.safe_load(text)
    assert spec["base"] == {
        "search": "run0",
        "search_tracking_uri": "sqlite:////x.db",
        "search_experiment": "neuron-search",
    }
    assert spec["variants"] == {
        "rank2-s2": {"train.optimizer.lr": 0.02},
        "rank3-t3": {"model.gate": base.model.gate, "model.memory": "replace"},
    }
    assert spec["seeds"] == [base.run.seed + 1 + k for k in range(6)]
    assert spec["primary_metric"] == OBJECTIVE == spec["metrics"][0]
    assert confirmation_spec(study, "sqlite:////x.db", "e", "run0", ranked[:1]) is None
    # A runner-up with the best's configuration, or another's, changes nothing: left out.
    repeated = [("b1", best), ("b2", dict(best)), ("s2", second), ("s3", second), ("t3", third)]
    spec = yaml.safe_load(confirmation_spec(study, "sqlite:////x.db", "e", "r", repeated) or "")
    assert list(spec["variants"]) == ["rank3-s2"]  # the top 3: b1, b2 (= b1), s2
    assert confirmation_spec(study, "sqlite:////x.db", "e", "r", repeated[:2]) is None
    assert "storage_path" not in spec and "address" not in spec  # local defaults
    cluster = {"storage_path": "s3://bucket/runs", "address": "auto", "max_failures": 3}
    smaller = dataclasses.replace(study, settings={"confirm": {"top": 2, "seeds": 3}} | cluster)
    spec = yaml.safe_load(confirmation_spec(smaller, "sqlite:////x.db", "e", "run0", ranked) or "")
    assert list(spec["variants"]) == ["rank2-s2"] and len(spec["seeds"]) == 3
    assert {key: spec[key] for key in cluster} == cluster
    path = tmp_path / "confirm.yaml"
    path.write_text(confirmation_spec(smaller, "http://head:5000", "e", "run0", ranked) or "")
    loaded = load_ablation_spec(path)  # a valid ablation spec, cluster keys included
    assert loaded.storage_path == "s3://bucket/runs" and loaded.base.search == "run0"
    off = dataclasses.replace(study, settings={"confirm": {"top": 0}})
    assert confirmation_spec(off, "sqlite:////x.db", "e", "run0", ranked) is None
    other = dataclasses.replace(study, objective="val/zsl_top1_spatial")
    assert confirmation_spec(other, "sqlite:////x.db", "e", "run0", ranked) is None
