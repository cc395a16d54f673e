"""Fixtures of the ablation tests: an MLflow store template shared with nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.tracking import check_tracking_uri


@pytest.fixture(scope="module")
def ablation_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated MLflow SQLite store for the module's studies."""
    path = tmp_path_factory.mktemp("ablate-store") / "mlflow.db"
    uri = f"sqlite:///{path}"
    check_tracking_uri(uri)
    return uri


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ablate")
