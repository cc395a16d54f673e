"""Shared fixtures of the search tests: MLflow stores and the tiny caches."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from neuron.config import load_config
from search.tracking import check_tracking_uri


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite store (creating one takes ~10 s; copying it, none)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    check_tracking_uri(f"sqlite:///{path}")
    return path


@pytest.fixture
def store(tmp_path: Path, mlflow_template: Path) -> str:
    """A fresh MLflow SQLite store for one test."""
    path = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset, text embeddings, stage-1 encoder and feature cache of the tiny config, built
    once for every search test (the trials only read them)."""
    from neuron.prepare import prepare

    cache = tmp_path_factory.mktemp("tiny-cache")
    prepare(load_config("tiny", {"run.cache_dir": str(cache)}), progress=False)
    return cache
