"""The MLflow UI, in a real headless Chromium, on a real search recorded by a real `mlflow server`:
the runs page lists the study, a trial's page names its parent study, its status and its final
test metrics, and the study's artifacts hold the summary."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest

from search.runner import run_search
from tests.search.helpers import mlflow_server, tiny_spec

BROWSER = next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
)


def page_text(url: str, tmp_path: Path) -> str:
    """The visible text of a page after the UI's scripts ran (virtual time lets them fetch and
    render before the DOM is dumped)."""
    assert BROWSER is not None
    dom = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1600,1200",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    visible = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", visible)))


def js_number(value: float) -> str:
    """A float as the UI prints it (JavaScript's shortest round-trip form, like Python's repr,
    except that whole numbers have no `.0`)."""
    return str(int(value)) if value.is_integer() else repr(value)


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no chromium (scripts/test.sh installs it with apt)")
def test_the_mlflow_ui_shows_the_study_its_trials_and_their_results(
    tmp_path, mlflow_template, tiny_cache
):
    with mlflow_server(tmp_path, mlflow_template) as uri:
        spec = tiny_spec(tmp_path, uri, tiny_cache, "num_trials=2", "scheduler.name=none")
        result = run_search(spec, "ui")
        assert f"open {uri}/#/experiments/{result.experiment_id}/runs" in result.summary()

        client = mlflow.MlflowClient(uri)
        study_run = client.get_run(result.studies[0].study_run_id)
        trials = client.search_runs(
            [result.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{study_run.info.run_id}'",
        )
        assert len(trials) == 2
        trial = trials[0]
        test_h = trial.data.metrics["test/gzsl_h"]

        runs_page = page_text(f"{uri}/#/experiments/{result.experiment_id}/runs", tmp_path)
        assert study_run.info.run_name in runs_page  # the study row; its trials nest under it
        assert "3 matching runs" in runs_page

        trial_page = page_text(
            f"{uri}/#/experiments/{result.experiment_id}/runs/{trial.info.run_id}", tmp_path
        )
        assert trial.info.run_name in trial_page
        assert f"Parent run {study_run.info.run_name}" in trial_page
        assert "neuron.status : completed" in trial_page
        assert f"test/gzsl_h {js_number(test_h)}" in trial_page
        assert "objective" in trial_page and "train.optimizer.lr" in trial_page

        artifacts = page_text(
            f"{uri}/#/experiments/{result.experiment_id}/runs/{study_run.info.run_id}/artifacts",
            tmp_path,
        )
        for name in ("best_config.yaml", "results.csv", "results.parquet"):
            assert name in artifacts
