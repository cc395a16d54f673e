"""The Tune trainable: turn a trial config into a `Config` and call `fit`.

Only `ray.tune.report`, `ray.tune.get_checkpoint` and `ray.tune.Checkpoint` are used here
(`ray.train.*` raises inside Tune trainables).

A `DivergenceError` from `fit` ends the trial at once, recorded as failed: the trial reports its
last metrics again with `DIVERGED` set to the reason and returns. Raising would make Tune retry it
`max_failures` times, as if a node had died, though the same seed and config diverge again. The
searcher tells Optuna FAIL and the tracking callback marks the MLflow run FAILED with status
`failed: DivergenceError: ...`; the study goes on.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray.tune

from neuron.config import Config, config_from_plain
from neuron.optim import DivergenceError
from neuron.prepare import Prepared
from neuron.train import fit
from search.checkpoints import REPLAY_MARKER
from search.staging import AnyPrepared, localize
from search.tracking import DIVERGED

SCRATCH_PREFIX = "neuron-trial-"
"""Prefix of fit's scratch folders under the temporary directory: `neuron-trial-<pid>-*`."""


def train_trial(
    config: dict[str, Any],
    *,
    base: dict[str, Any],
    prepared: AnyPrepared | None,
    objective: str | None = None,
) -> None:
    """One trial: `base` (the study's resolved config, plain) plus `config["overrides"]` (the
    dotted overrides proposed by `search.space.define_space`), resumed from Tune's checkpoint.

    `prepared` holds the paths of the caches the driver built once (memory-mapped features, text
    embeddings, encoder); every trial on a node reads those same files. Built on a worker and
    published to shared storage (`prepare.where: worker`), they are downloaded once per node
    first (`search.staging.localize`). On a node that cannot see them (no shared
    `run.cache_dir`), `fit` prepares them once per node under a file lock.
    `objective` is the search's metric: a trial that diverges before its first report reports
    it (and `selected/<objective>`, which schedulers compare) as NaN (Tune requires them in
    every result).
    """
    run_trial(config_from_plain(base).replace(config["overrides"]), prepared, objective)


def run_trial(cfg: Config, staged: AnyPrepared | None, objective: str | None = None) -> None:
    """`fit(cfg)` under Tune: reports and checkpoints go to Tune, a restored trial resumes from
    its checkpoint, and a divergence ends the trial with its reason (`DIVERGED`) instead of an
    error that Tune would retry. Shared by search trials and ablation runs."""
    prepared: Prepared | None = localize(staged, Path(cfg.run.cache_dir))
    if prepared is not None and not Path(prepared.feature_cache_path).is_file():
        prepared = None

    last: dict[str, Any] = {"epoch": 0.0}
    if objective:
        last |= {objective: math.nan, f"selected/{objective}": math.nan}

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        # Tune persists the checkpoint to the storage path before `report` returns, so `fit`
        # may delete `checkpoint_dir` afterwards.
        checkpoint = (
            None if checkpoint_dir is None else ray.tune.Checkpoint.from_directory(checkpoint_dir)
        )
        last.update(metrics)
        ray.tune.report(dict(metrics), checkpoint=checkpoint)

    try:
        _run(cfg, report, prepared)
    except DivergenceError as error:
        # The last epoch's metrics again (schedulers see nothing new), plus the reason.
        ray.tune.report(last | {DIVERGED: f"DivergenceError: {error}"[:500]})


def _run(cfg: Any, report: Any, prepared: Prepared | None) -> None:
    """fit from scratch, or from Tune's checkpoint of this trial."""
    with scratch_folder() as run_dir:
        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is None:
            fit(cfg, report, run_dir=run_dir, prepared=prepared)
            return
        with checkpoint.as_directory() as resume_dir:
            replay = (Path(resume_dir) / REPLAY_MARKER).is_file()
            fit(
                cfg,
                report,
                run_dir=run_dir,
                resume_from=resume_dir,
                prepared=prepared,
                replay=replay,
            )


def scratch_folder() -> tempfile.TemporaryDirectory:
    """fit's own run folder: scratch space, since the reported checkpoints (in Tune's storage)
    and MLflow hold everything; kept out of the trial folder that Tune syncs.

    A trial stopped by the scheduler never leaves its `with` block (Tune abandons its thread),
    so stale folders are removed first.
    """
    remove_stale_scratch()
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")


def remove_stale_scratch() -> None:
    """Remove the scratch folders of earlier trials of this (reused) actor process and of
    processes that are gone (killed workers, lost nodes)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        owner = folder.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if owner.isdigit() and (int(owner) == os.getpid() or not _alive(int(owner))):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
