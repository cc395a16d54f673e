"""Fault tolerance with real Ray: a worker node lost mid-study, a driver killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import ray
from ray.cluster_utils import Cluster

from search.runner import run_search
from search.tracking import MlflowTracker
from search.trainable import remove_stale_scratch
from tests.search.helpers import SPECS, descendants, end_processes, tiny_spec

SPLIT = "synthetic_default"


def study_and_children(store: str, name: str):
    tracker = MlflowTracker(store, "neuron-search")
    study = tracker.find_run({"neuron.search": name, "neuron.role": "study", "neuron.split": SPLIT})
    assert study is not None
    return study, tracker.children(study.info.run_id)


def checkpointed(experiment: Path, epoch_index: int) -> set[str]:
    """Trials with a checkpoint at or past `epoch_index` (0-based; only the last 2 are kept)."""
    return {
        path.parent.name
        for path in experiment.glob("trial_*/checkpoint_*")
        if int(path.name.rsplit("_", 1)[1]) >= epoch_index
    }


def recorded_checkpoints(experiment: Path) -> dict[str, str]:
    """Running trial id → the checkpoint folder the newest saved experiment state names."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        trial_data = json.loads(states[-1].read_text())["trial_data"]
    except (json.JSONDecodeError, KeyError):
        return {}  # being written
    recorded = {}
    for trial_json, metadata_json in trial_data:
        trial, metadata = json.loads(trial_json), json.loads(metadata_json)
        name = (metadata.get("last_result") or {}).get("checkpoint_dir_name")
        if trial["status"] == "RUNNING" and name:
            recorded[trial["trial_id"]] = name
    return recorded


def prune_like_a_killed_driver(experiment: Path, recorded: dict[str, str]) -> None:
    """What a driver killed between Tune's checkpoint pruning and its forced state snapshot
    leaves: a newer checkpoint on storage, and the one the state names deleted."""
    for trial_id, name in recorded.items():
        trial_dir = experiment / f"trial_{trial_id}"
        if (trial_dir / name).is_dir():  # else already pruned since the state was saved
            newest = max(int(p.name.rsplit("_", 1)[1]) for p in trial_dir.glob("checkpoint_*"))
            (trial_dir / name).rename(trial_dir / f"checkpoint_{newest + 1:06d}")
        assert not (trial_dir / name).exists()


def last_result(trial_dir: Path) -> dict:
    lines = (trial_dir / "result.json").read_text().strip().splitlines()
    return json.loads(lines[-1])


@pytest.mark.slow
def test_a_worker_node_lost_mid_study_and_every_trial_completes_from_its_checkpoint(
    tmp_path, store, tiny_cache
):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    experiment = tmp_path / "out" / "node-loss" / SPLIT
    removed = threading.Event()
    finished = threading.Event()

    def lose_a_node_mid_trial() -> None:
        # Both workers are mid-trial once two trials (started together, one per node) have
        # checkpointed epoch 3 of 60.
        while not finished.is_set():
            if len(checkpointed(experiment, 2)) >= 2:
                # The surviving worker takes the interrupted trial over (adding a node needs
                # the main thread, which runs the search).
                cluster.remove_node(workers[0], allow_graceful=False)
                removed.set()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=lose_a_node_mid_trial, daemon=True)
    watcher.start()
    try:
        spec = tiny_spec(
            tmp_path,
            store,
            tiny_cache,
            "num_trials=3",
            "scheduler.name=none",
            "space.train.epochs=60",
            "max_failures=3",
        )
        run_search(spec, "node-loss")
    finally:
        finished.set()
        watcher.join(timeout=30)
        ray.shutdown()
        cluster.shutdown()
        remove_stale_scratch()  # of the trial killed with its node
    assert removed.is_set(), "the node was never removed: trials finished too fast"

    study, children = study_and_children(store, "node-loss")
    assert len(children) == 3 and len({c.data.tags["neuron.trial_id"] for c in children}) == 3
    assert all(
        c.info.status == "FINISHED" and c.data.tags["neuron.status"] == "completed"
        for c in children
    )
    assert all(c.data.tags["neuron.epochs_reached"] == "60" for c in children)
    recovered = [c for c in children if int(c.data.tags.get("neuron.recoveries", "0")) >= 1]
    assert recovered, "no trial was interrupted by the lost node"
    client = mlflow.MlflowClient(store)
    for child in recovered:
        trial_dir = experiment / f"trial_{child.data.tags['neuron.trial_id']}"
        final = last_result(trial_dir)
        # Resumed from a checkpoint, not restarted: fewer iterations since the restore.
        assert final["training_iteration"] == 60
        assert 0 < final["iterations_since_restore"] < 60
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/gzsl_h")]
        assert steps == list(range(1, 61))
    assert study.info.status == "FINISHED"


@pytest.mark.slow
def test_a_killed_driver_is_resumed_to_completion_with_the_same_runs(tmp_path, store, tiny_cache):
    overrides = [
        f"output_dir={tmp_path / 'out'}",
        f"tracking_uri={store}",
        f"base.overrides.run.cache_dir={tiny_cache}",
        "num_trials=4",
        "scheduler.name=none",
        "space.train.epochs=20",
    ]
    command = [
        sys.executable,
        "-m",
        "search",
        str(SPECS / "tiny.yaml"),
        *overrides,
        "--name",
        "killed",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    experiment = tmp_path / "out" / "killed" / SPLIT
    log = (tmp_path / "driver.log").open("w")
    # Tune saves its experiment state every 10 s by default: sooner here, so the state names a
    # running trial's checkpoint before these short trials end.
    driver = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env | {"TUNE_GLOBAL_CHECKPOINT_S": "0.5"},
    )
    ray_processes: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while not recorded_checkpoints(experiment):
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial checkpoint within 300 s"
            time.sleep(0.1)
        ray_processes = descendants(driver.pid)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        # The dead driver's local Ray instance: end what it left behind, by pid.
        end_processes(ray_processes)
        # The worst moment to die: the saved state names checkpoints Tune already deleted.
        recorded = recorded_checkpoints(experiment)
        assert recorded
        prune_like_a_killed_driver(experiment, recorded)

        study, children = study_and_children(store, "killed")
        assert study.info.status == "RUNNING"
        assert any(c.info.status == "RUNNING" for c in children)

        resumed = subprocess.run(
            [*command, "--resume"],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
        end_processes(ray_processes)
        remove_stale_scratch()  # of the trials killed with the driver
        log.close()

    assert "best trial" in resumed.stdout and "mlflow ui --backend-store-uri" in resumed.stdout
    resumed_study, children = study_and_children(store, "killed")
    assert resumed_study.info.run_id == study.info.run_id  # the same parent run
    assert resumed_study.info.status == "FINISHED"
    trial_ids = [c.data.tags["neuron.trial_id"] for c in children]
    assert len(trial_ids) == len(set(trial_ids))  # one child per trial, no duplicates
    assert all(c.info.status != "RUNNING" for c in children)
    live = [c for c in children if not c.data.tags["neuron.status"].startswith("lost")]
    assert len(live) == 4
    statuses = [c.data.tags["neuron.status"] for c in live]
    assert statuses == ["completed"] * 4, statuses
    client = mlflow.MlflowClient(store)
    for child in live:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/gzsl_h")]
        assert steps == list(range(1, 21))  # every epoch once, across both drivers
    optuna_study = optuna.load_study(
        study_name=f"killed/{SPLIT}",
        storage=f"sqlite:///{tmp_path / 'out' / 'killed' / 'optuna.db'}",
    )
    states = [t.state for t in optuna_study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
