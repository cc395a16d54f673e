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


def page_text(url: str, tmp_path: Path, screenshot: Path | None = None) -> str:
    """The visible text of a page after the UI's scripts ran (virtual time lets them fetch and
    render before the DOM is dumped); with `screenshot`, also a PNG of the page."""
    assert BROWSER is not None
    browser = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1600,1200",
        "--virtual-time-budget=15000",
    ]
    dom = subprocess.run(
        [*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    if screenshot is not None:
        subprocess.run(
            [*browser, f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
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
        assert (
            f"open {uri}/#/experiments/{result.experiment_id}/runs?workflowType=machine_learning"
            in result.summary()
        )

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
        for name in ("best_config.yaml", "results.csv", "results.parquet", "plots"):
            assert name in artifacts

        # The study's trials page printed at the end: the model-training view, the trials by
        # name, best first, with the objective and the searched parameters as columns.
        (study,) = result.studies
        assert study.trials_url and study.trials_url.startswith(f"{uri}/#/experiments/")
        shot = tmp_path / "trials.png"
        trials_page = page_text(study.trials_url, tmp_path, screenshot=shot)
        assert "Model training" in trials_page and "2 matching runs" in trials_page
        header = trials_page.split("Run Name", 1)[1]
        assert "objective" in header.split("trial ", 1)[0]  # a column, before the first row
        assert "search.model.logit_scale" in header.split("trial ", 1)[0]  # a searched param
        ranked = sorted(trials, key=lambda run: -run.data.metrics["objective"])
        positions = [trials_page.index(run.info.run_name) for run in ranked]
        assert positions == sorted(positions)  # best first
        for run in ranked:
            assert run.info.run_name.startswith("trial ") and "· lr " in run.info.run_name
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
        from PIL import Image

        with Image.open(shot) as image:
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
