"""The cluster path end to end on one machine, with real components:

- a Ray head with Ray's fake multi-node autoscaler and cluster.yaml's topology
  (tests/cluster/cluster.local.yaml: a CPU-less head, a 1-GPU type, a multi-GPU `stage1` type;
  GPUs are logical here), token auth on;
- PostgreSQL (a throwaway `initdb` cluster) behind the secured MLflow server, started with
  `python -m search.mlflow_service` as cluster.yaml starts it, basic auth on;
- moto's S3 server, an S3 *emulator* on loopback, holding the MLflow artifacts (boto3 with
  MLFLOW_S3_ENDPOINT_URL, the path real S3 takes) and the published stage-1 build (pyarrow's
  S3 filesystem with `endpoint_override`);
- `ray job submit -- neuron search ...`, the way cluster users submit a search.

One search is submitted (module fixture); each test checks one property of it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest

from tests.cluster.browser import basic_auth, render
from tests.cluster.services import (
    BIN,
    fake_cluster,
    postgres,
    postgres_missing,
    s3_emulator,
    s3_keys,
    secured_mlflow,
    wait_until,
)
from tests.search.helpers import SPECS
from tests.search.test_mlflow_ui import BROWSER

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "neuron-lab"
SPLIT = "synthetic_default"
ARTIFACTS = ROOT / "runs" / "test-artifacts"
EXPAND_ROW = (
    "[...document.querySelectorAll('[role=row]')].find(r => r.textContent.includes('%s'))"
    ".querySelector('button[data-component-id*=runnamecellrenderer]').click()"
)
"""Clicks the expand button of the MLflow runs table's row named %s (MLflow 3's run-name cell)."""


def _missing() -> str | None:
    reason = postgres_missing()
    if reason:
        return reason
    for module, package in (
        ("moto", "moto[server]"),
        ("psycopg", "psycopg[binary]"),
        ("boto3", "boto3"),
        ("flask_wtf", "mlflow[auth]"),
        ("aiohttp_cors", "ray[default]"),
    ):
        try:
            __import__(module)
        except ImportError:
            return f"{package} is not installed (scripts/test.sh installs it)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


class Watcher(threading.Thread):
    """Polls the cluster's alive worker nodes while the job runs."""

    def __init__(self, cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.counts: list[int] = []
        self.types: set[str] = set()
        self.finished = threading.Event()

    def run(self) -> None:
        while not self.finished.is_set():
            try:
                workers = self.cluster.alive_workers()
            except Exception:
                workers = None
            if workers is not None:
                self.counts.append(len(workers))
                for node in workers:
                    self.types.update(k for k in node["resources_total"] if k in ("stage1", "GPU"))
            time.sleep(1)


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    """Services up, one search submitted with `ray job submit`, the cluster back to its head."""
    folder = tmp_path_factory.mktemp("cluster")
    with (
        postgres(("mlflow", "mlflow_auth")) as database,
        s3_emulator(BUCKET) as endpoint,
        secured_mlflow(database, endpoint, BUCKET, folder) as server,
        fake_cluster(folder, server.environment) as cluster,
    ):
        assert cluster.alive_workers() == []  # min_workers 0: only the head
        shared = folder / "shared"  # NFS-like storage that every fake node sees
        stage1 = f"s3://{BUCKET}/stage1?endpoint_override={endpoint.removeprefix('http://')}&scheme=http&region=us-east-1"
        command = [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            cluster.dashboard_url,
            "--submission-id",
            "neuron-search-sim",
            # The README submits with `--working-dir .` and a relative spec path. Not here: the
            # fake nodes share one runtime_resources folder, and every node that starts a worker
            # of the job unpacks the working dir again over the old copy (Ray replaces it), which
            # deletes the driver's current directory under it; on real nodes each has its own.
            "--",
            "neuron",
            "search",
            str(SPECS / "tiny.yaml"),
            f"output_dir={folder / 'out'}",
            f"storage_path={shared / 'tune'}",
            f"base.overrides.run.cache_dir={folder / 'node-cache'}",
            "num_trials=3",
            "max_concurrent_trials=2",
            "scheduler.name=none",
            "space.train.epochs=3",
            "prepare.where=worker",
            f"prepare.shared_cache={stage1}",
            "prepare.cpu=1",
            "prepare.gpu=1",
            "prepare.resources={stage1: 1}",
            "--name",
            "sim",
        ]
        watcher = Watcher(cluster)
        watcher.start()
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        try:
            job = subprocess.run(
                command,
                env=environment | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token},
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            idle = wait_until(lambda: cluster.alive_workers() == [], 120, "scale-down to the head")
        finally:
            watcher.finished.set()
            watcher.join(timeout=10)
        status_code, tasks = cluster.api(
            "/api/v0/tasks?detail=true&limit=1000&filter_keys=func_or_class_name"
            "&filter_predicates=%3D&filter_values=build_and_publish"
        )
        _, actors = cluster.api("/api/v0/actors?detail=true&limit=1000")
        nodes = cluster.nodes()
        unauthenticated = cluster.api("/api/jobs/", token=None)
        wrong_token = cluster.api("/api/jobs/", token="0" * 64)
        no_token = subprocess.run(
            [str(BIN / "ray"), "job", "list", "--address", cluster.dashboard_url],
            env=environment | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        yield {
            "folder": folder,
            "job": job,
            "idle": idle,
            "watcher": watcher,
            "tasks": tasks if status_code == 200 else None,
            "actors": actors,
            "nodes": nodes,
            "unauthenticated": unauthenticated,
            "wrong_token": wrong_token,
            "no_token": no_token,
            "server": server,
            "s3": endpoint,
            "cluster": cluster,
        }


def test_a_submitted_search_scales_up_runs_stage1_and_trials_on_workers_then_scales_down(
    submitted,
):
    job, watcher = submitted["job"], submitted["watcher"]
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    # Scale-up from the head alone, both worker types used, and back to the head when idle.
    assert watcher.counts and watcher.counts[0] == 0
    assert max(watcher.counts) >= 2, watcher.counts
    assert {"stage1", "GPU"} <= watcher.types
    assert submitted["idle"] and watcher.counts[-1] <= max(watcher.counts)

    nodes = {n["node_id"]: n for n in submitted["nodes"]}
    head = next(node_id for node_id, n in nodes.items() if n["is_head_node"])
    # Stage 1 + the feature cache: one Ray task, on a worker of the multi-GPU type.
    tasks = [t for t in submitted["tasks"]["data"]["result"]["result"] if t["state"] == "FINISHED"]
    assert len(tasks) == 1, tasks
    stage1_node = tasks[0]["node_id"]
    assert stage1_node != head and "stage1" in nodes[stage1_node]["resources_total"]
    assert tasks[0]["required_resources"] == {"CPU": 1.0, "GPU": 1.0, "stage1": 1.0}
    # The study records the same node, and the build lives on (emulated) S3.
    server = submitted["server"]
    client = mlflow.MlflowClient(server.uri)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.environment.items():
            patch.setenv(key, value)
        experiment = client.get_experiment_by_name("neuron-search")
        study = client.search_runs(
            [experiment.experiment_id],
            "tags.`neuron.role` = 'study' and tags.`neuron.search` = 'sim'",
        )[0]
        trials = client.search_runs(
            [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{study.info.run_id}'"
        )
    assert study.data.tags["neuron.stage1.node_id"] == stage1_node
    assert study.data.tags["neuron.stage1.location"].startswith(f"s3://{BUCKET}/stage1/prepared/")
    published = [k for k in s3_keys(submitted["s3"], BUCKET, "stage1/prepared/") if k[-1] != "/"]
    assert {k.rsplit("/", 1)[1] for k in published} == {
        "encoder.pt",
        "features.arrow",
        "side_information.pt",
        "manifest.json",
    }
    # Trials read a node-local copy fetched from S3 (one per key; the fake nodes share a disk).
    assert len(list((submitted["folder"] / "node-cache" / "shared").glob("*/features.arrow"))) == 1
    # Trials: 3 finished, each on a worker node (Ray's record of the trainable actors).
    assert len(trials) == 3 and all(t.data.tags["neuron.status"] == "completed" for t in trials)
    trial_actors = [
        a
        for a in submitted["actors"]["data"]["result"]["result"]
        if "train_trial" in a["class_name"] or "ImplicitFunc" in a["class_name"]
    ]
    assert trial_actors, "no trial actors recorded"
    assert all(a["node_id"] != head for a in trial_actors)
    assert all(nodes[a["node_id"]]["resources_total"].get("GPU") for a in trial_actors)


def test_ray_job_submit_runs_the_search_with_token_auth_and_reports_its_logs(submitted):
    job = submitted["job"]
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    # The job's own logs, streamed by `ray job submit`, end with the search summary.
    assert "Job 'neuron-search-sim' succeeded" in job.stdout
    assert "search 'sim'" in job.stdout and "best trial" in job.stdout
    assert "a Ray task on a worker" in job.stdout
    # Token auth: no token → 401, a wrong one → 403, and the CLI with a wrong token fails.
    assert submitted["unauthenticated"][0] == 401
    assert submitted["wrong_token"][0] == 403
    assert submitted["no_token"].returncode != 0
    status, jobs = submitted["cluster"].api("/api/jobs/")
    assert status == 200
    assert [j["status"] for j in jobs if j["submission_id"] == "neuron-search-sim"] == ["SUCCEEDED"]


def _get(url: str, credentials: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url)
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_mlflow_server_on_postgres_requires_basic_auth_and_keeps_artifacts_on_s3(submitted):
    server = submitted["server"]
    search = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=10"
    assert _get(search, None) == 401
    assert _get(search, (server.username, "wrong-password")) == 401
    assert _get(search, ("nobody", server.password)) == 401
    assert _get(search, (server.username, server.password)) == 200
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.environment.items():
            patch.setenv(key, value)
        client = mlflow.MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("neuron-search")
        runs = client.search_runs([experiment.experiment_id], "tags.`neuron.search` = 'sim'")
        study = next(r for r in runs if r.data.tags["neuron.role"] == "study")
        artifacts = {a.path for a in client.list_artifacts(study.info.run_id)}
    assert len(runs) == 4  # the study and its 3 trials
    assert {"best_config.yaml", "results.csv"} <= artifacts
    stored = s3_keys(submitted["s3"], BUCKET, "mlflow-artifacts/")
    assert any(k.endswith(f"{study.info.run_id}/artifacts/best_config.yaml") for k in stored)
    # Without the credentials the MLflow client is refused too.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        patch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(mlflow.exceptions.MlflowException, match="401|Unauthorized|credentials"):
            mlflow.MlflowClient(server.uri).search_experiments()


@pytest.mark.skipif(BROWSER is None, reason="no chromium (scripts/test.sh installs it with apt)")
def test_the_mlflow_ui_with_credentials_shows_the_study_and_its_trials(submitted, tmp_path):
    server = submitted["server"]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.environment.items():
            patch.setenv(key, value)
        client = mlflow.MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("neuron-search")
        runs = client.search_runs([experiment.experiment_id], "tags.`neuron.search` = 'sim'")
    study = next(r for r in runs if r.data.tags["neuron.role"] == "study")
    trial = next(r for r in runs if r.data.tags["neuron.role"] == "trial")
    runs_page = f"{server.uri}/#/experiments/{experiment.experiment_id}/runs"
    credentials = basic_auth(server.username, server.password)
    screenshot = ARTIFACTS / "mlflow-ui-cluster.png"
    text = render(
        BROWSER,
        runs_page,
        tmp_path / "profile",
        credentials,
        expect=f"{len(runs)} matching runs",
        screenshot=screenshot,
        # Expand the study's row: its trials are listed under it.
        then=[(EXPAND_ROW % study.info.run_name, trial.info.run_name)],
    )
    assert study.info.run_name in text and f"{len(runs)} matching runs" in text, text[-2000:]
    trial_names = [r.info.run_name for r in runs if r.data.tags["neuron.role"] == "trial"]
    assert all(name in text for name in trial_names), text[-2000:]
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    # A trial's page names its parent, the study.
    trial_page = render(
        BROWSER,
        f"{runs_page}/{trial.info.run_id}",
        tmp_path / "profile",
        credentials,
        expect="Parent run",
    )
    assert trial.info.run_name in trial_page and study.info.run_name in trial_page
    # Without credentials the same page lists no run.
    anonymous = render(BROWSER, runs_page, tmp_path / "anonymous")
    assert study.info.run_name not in anonymous and "matching runs" not in anonymous
