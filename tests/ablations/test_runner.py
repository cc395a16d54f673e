"""What a finished study prints: commands that work when pasted into a fresh shell."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any, cast

import pytest

from ablations.cli import add_arguments
from ablations.runner import AblationResult, Stage1
from ablations.spec import DEFAULT_EXPERIMENT


def result(tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT) -> AblationResult:
    return AblationResult(
        name="study",
        tracking_uri=tracking_uri,
        experiment=experiment,
        experiment_id="3",
        root_run_id="abc123",
        storage_path="runs/ablate/study",
        stage1=Stage1(),
        report=cast(Any, None),
        output_dir=Path("runs/ablate/study"),
    )


def test_a_local_store_prints_an_mlflow_command_that_works_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    printed = result("sqlite:///runs/ablate/mlflow.db").mlflow_url()
    command, page = printed.split("\n")
    words = shlex.split(command)
    assert Path(words[0]).name == "mlflow" and words[1] == "ui"
    assert words[words.index("--backend-store-uri") + 1] == (
        f"sqlite:///{tmp_path}/runs/ablate/mlflow.db"
    )
    # The study's run page, in MLflow's model-training view (not the GenAI overview).
    assert page.strip() == (
        "then open http://127.0.0.1:5000/#/experiments/3/runs/abc123?workflowType=machine_learning"
    )


def test_a_tracking_server_prints_the_run_page_on_the_server() -> None:
    assert result("http://10.0.0.5:5000/").mlflow_url() == (
        "http://10.0.0.5:5000/#/experiments/3/runs/abc123?workflowType=machine_learning"
    )


@pytest.mark.parametrize("experiment", [DEFAULT_EXPERIMENT, "neuron-confirm", "my lab"])
def test_the_printed_report_command_finds_the_study_in_its_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, experiment: str
) -> None:
    """A confirm.yaml study lives in `neuron-confirm`: the rebuild command must say so."""
    monkeypatch.chdir(tmp_path)
    words = shlex.split(result("sqlite:///runs/ablate/mlflow.db", experiment).report_command())
    assert Path(words[0]).name == "neuron" and words[1] == "ablate"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(words[2:])
    assert (args.spec, args.overrides) == ("report", ["study"])
    assert args.experiment == experiment
    assert args.tracking_uri == f"sqlite:///{tmp_path}/runs/ablate/mlflow.db"
