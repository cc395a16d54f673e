"""The Tune trainable: turn a trial config into a `Config` and call `fit`.

Only `ray.tune.report`, `ray.tune.get_checkpoint` and `ray.tune.Checkpoint` are used here
(`ray.train.*` raises inside Tune trainables). A `DivergenceError` from `fit` is not caught: Tune
records the trial as errored with that reason (the tracking callback tags its MLflow run
`failed: DivergenceError: ...`) and the study goes on.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import ray.tune

from neuron.config import config_from_plain
from neuron.train import Prepared, fit


def train_trial(config: dict[str, Any], *, base: dict[str, Any], prepared: Prepared | None) -> None:
    """One trial: `base` (the study's resolved config, plain) plus `config["overrides"]` (the
    dotted overrides proposed by `search.space.define_space`), resumed from Tune's checkpoint.

    `prepared` holds the paths of the caches the driver built once (memory-mapped features, text
    embeddings, encoder); every trial on a node reads those same files. On a node that cannot see
    them (no shared `run.cache_dir`), `fit` prepares them once per node under a file lock.
    """
    cfg = config_from_plain(base).replace(config["overrides"])
    if prepared is not None and not Path(prepared.feature_cache_path).is_file():
        prepared = None

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        # Tune persists the checkpoint to the storage path before `report` returns, so `fit`
        # may delete `checkpoint_dir` afterwards.
        checkpoint = (
            None if checkpoint_dir is None else ray.tune.Checkpoint.from_directory(checkpoint_dir)
        )
        ray.tune.report(dict(metrics), checkpoint=checkpoint)

    # fit's own run folder is scratch space: the reported checkpoints (in Tune's storage) and
    # MLflow hold everything, so it stays out of the trial folder that Tune syncs.
    with tempfile.TemporaryDirectory(prefix="neuron-trial-") as run_dir:
        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is None:
            fit(cfg, report, run_dir=run_dir, prepared=prepared)
            return
        with checkpoint.as_directory() as resume_dir:
            fit(cfg, report, run_dir=run_dir, resume_from=resume_dir, prepared=prepared)
