"""A tiny ablation study end to end: real Ray, real MLflow (SQLite), the synthetic dataset.

One study (ablations/specs/tiny.yaml: full, a stage-2 variant and a stage-1 variant, plus a
variant whose training diverges; 2 seeds) is shared by the tests of this module; the
killed-and-resumed study reuses its stage-1 caches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import ray

from ablations.report import build_report
from ablations.runner import plan_study, run_ablation
from ablations.spec import load_ablation_spec
from ablations.tracking import NOTE, ROLE_RUN, TAG_ABLATION
from search.tracking import MlflowTracker
from tests.search.helpers import descendants, end_processes

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "ablations" / "specs" / "tiny.yaml"
NAME = "tiny-study"


def overrides(work: Path, store: str) -> list[str]:
    return [
        f"output_dir={work / 'out'}",
        f"tracking_uri={store}",
        f"base.overrides.run.cache_dir={work / 'cache'}",
    ]


@pytest.fixture(scope="module")
def study(work, ablation_store):
    """Run the tiny study once (a 2-CPU local Ray instance of our own)."""
    spec = load_ablation_spec(
        TINY,
        [
            *overrides(work, ablation_store),
            "variants.diverges={train.optimizer.lr: 1.0e12}",
            "max_failures=0",
        ],
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        result = run_ablation(plan_study(spec), NAME)
    finally:
        ray.shutdown()
    return result


def children(store: str, name: str) -> list:
    tracker = MlflowTracker(store, "neuron-ablate")
    return [
        r
        for r in tracker.client.search_runs(
            [tracker.experiment_id], filter_string=f"tags.`{TAG_ABLATION}` = '{name}'"
        )
        if r.data.tags.get("neuron.role") == ROLE_RUN
    ]


@pytest.mark.slow
def test_study_is_recorded_in_mlflow(study, ablation_store):
    client = mlflow.MlflowClient(ablation_store)
    parent = client.get_run(study.root_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["neuron.role"] == "ablation_study"
    runs = children(ablation_store, NAME)
    assert len(runs) == 8
    failed = [r for r in runs if r.data.tags["neuron.variant"] == "diverges"]
    for run in failed:  # recorded with its reason; the study went on
        assert run.info.status == "FAILED"
        assert run.data.tags["neuron.status"].startswith("failed: DivergenceError: ")
    runs = [r for r in runs if r not in failed]
    cells = {
        (r.data.tags["neuron.variant"], r.data.tags["neuron.split"], r.data.tags["neuron.seed"])
        for r in runs
    }
    assert cells == {
        (v, "synthetic_default", s)
        for v in ("full", "no-memory", "short-pretrain")
        for s in ("0", "1")
    }
    for run in runs:
        tags = run.data.tags
        assert run.info.status == "FINISHED" and tags["neuron.status"] == "completed"
        assert tags["mlflow.parentRunId"] == study.root_run_id
        assert run.info.run_name == (
            f"{tags['neuron.variant']} · synthetic_default · seed {tags['neuron.seed']}"
        )
        assert run.data.params["run.seed"] == tags["neuron.seed"]
        assert "test/zsl_top1" in run.data.metrics
        assert "selected/val/zsl_top1" in run.data.metrics
        if tags["neuron.variant"] == "no-memory":
            assert tags["neuron.override.model.memory"] == '"replace"'
            assert run.data.params["model.memory"] == "replace"
    # The report: files, artifacts on the parent, the summary as the run's description.
    for name in ("report.md", "report.csv", "synthetic_default.png"):
        assert (study.output_dir / name).stat().st_size > 0
    logged = {a.path for a in client.list_artifacts(study.root_run_id, "report")}
    assert {"report/report.md", "report/report.csv", "report/synthetic_default.png"} <= logged
    assert parent.data.tags[NOTE] == study.report.text() == study.report.note()
    assert "| **full** | reference | 2 |" in parent.data.tags[NOTE]
    assert parent.data.tags["neuron.runs_completed"] == "6"
    assert parent.data.tags["neuron.runs_failed"] == "2"
    missing = study.report.missing("synthetic_default")
    assert len(missing) == 2 and all(m.startswith("diverges seed") for m in missing)
    assert "failed: DivergenceError" in missing[0]
    assert "Missing cells: diverges seed 0: failed: DivergenceError" in parent.data.tags[NOTE]


@pytest.mark.slow
def test_report_statistics_match_the_runs(study, ablation_store):
    """The report's means are the runs' metrics, in percent, and the differences pair by seed."""
    runs = children(ablation_store, NAME)
    value = {
        (r.data.tags["neuron.variant"], int(r.data.tags["neuron.seed"])): r.data.metrics[
            "test/zsl_top1"
        ]
        for r in runs
        if r.info.status == "FINISHED"
    }
    summary = study.report.summaries[("synthetic_default", "no-memory", "test/zsl_top1")]
    assert summary.mean == pytest.approx((value[("no-memory", 0)] + value[("no-memory", 1)]) / 2)
    comparison = study.report.comparisons[("synthetic_default", "no-memory", "test/zsl_top1")]
    expected = sum(value[("no-memory", s)] - value[("full", s)] for s in (0, 1)) / 2
    assert comparison.n == 2 and comparison.difference.mean == pytest.approx(expected)
    assert "1 degree of freedom" in comparison.note
    csv_lines = (study.output_dir / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 4 * 5  # header + variants × metrics
    diverged = study.report.comparisons[("synthetic_default", "diverges", "test/zsl_top1")]
    assert diverged.n == 0 and "no interval and no test" in diverged.note


@pytest.mark.slow
def test_stage1_is_shared_by_stage2_variants(study, work):
    """full and no-memory share one encoder and feature cache (for both seeds); short-pretrain
    changes stage 1 and gets its own: 2 encoders built for 6 runs."""
    assert (study.stage1.encoders_built, study.stage1.caches_built) == (2, 2)
    assert (study.stage1.encoders_reused, study.stage1.caches_reused) == (0, 0)
    assert len(list((work / "cache" / "encoders").glob("*/encoder.pt"))) == 2
    assert len(list((work / "cache" / "features").glob("*.arrow"))) == 2
    assert "2 encoder(s) and 2 feature cache(s) serve 8 runs" in study.summary()


@pytest.mark.slow
def test_report_rebuilt_from_mlflow_in_a_fresh_process(study, ablation_store, work):
    out = work / "rebuilt"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ablations",
            "report",
            NAME,
            "--tracking-uri",
            ablation_store,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    for name in ("report.md", "report.csv"):
        assert (out / name).read_text() == (study.output_dir / name).read_text()
    assert (out / "synthetic_default.png").read_bytes() == (
        study.output_dir / "synthetic_default.png"
    ).read_bytes()
    listed = subprocess.run(
        [sys.executable, "-m", "ablations", "list", "--tracking-uri", ablation_store],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
        check=False,
    )
    assert listed.returncode == 0 and NAME in listed.stdout and study.root_run_id in listed.stdout


@pytest.mark.slow
def test_killed_study_resumes_without_duplicate_runs(study, ablation_store, work):
    """SIGKILL the driver once some runs finished; `--resume` completes the grid with one
    MLflow run per cell, none left RUNNING."""
    name = "killed"
    command = [
        sys.executable,
        "-m",
        "ablations",
        str(TINY),
        *overrides(work, ablation_store),
        "base.overrides.train.epochs=4",
        "--name",
        name,
    ]
    environment = os.environ | {"RAY_ADDRESS": ""}
    driver = subprocess.Popen(
        command, cwd=work, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    tracked: set[int] = set()
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            tracked |= set(descendants(driver.pid))
            runs = children(ablation_store, name)
            if sum(r.info.status == "FINISHED" for r in runs) >= 1 and len(runs) < 6:
                break
            time.sleep(0.3)
        assert driver.poll() is None, "the study ended before it could be killed"
        tracked |= set(descendants(driver.pid))
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        end_processes(sorted(tracked))
    before = children(ablation_store, name)
    assert 1 <= sum(r.info.status == "FINISHED" for r in before) < 6
    resumed = subprocess.run(
        [*command, "--resume"],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = children(ablation_store, name)
    cells = [r.data.tags["neuron.cell"] for r in runs]
    assert len(cells) == 6 and len(set(cells)) == 6  # one run per cell, no duplicates
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["neuron.status"] == "completed" for r in runs)
    finished_before = {r.info.run_id for r in before if r.info.status == "FINISHED"}
    assert finished_before <= {r.info.run_id for r in runs}
    tracker = MlflowTracker(ablation_store, "neuron-ablate")
    report = build_report(tracker, runs[0].data.tags["mlflow.parentRunId"])
    assert not report.missing("synthetic_default")
    assert "2 encoder(s) and 2 feature cache(s) serve 6 runs (built now: 0" in resumed.stdout
    assert json.loads(json.dumps(report.plan))["seeds"] == [0, 1]
