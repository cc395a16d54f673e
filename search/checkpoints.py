"""Trial checkpoints on the storage path: pruned by the driver, repaired on restore.

Tune's own pruning (`CheckpointConfig(num_to_keep)`) is not used. Tune writes the experiment
state, which names each trial's latest checkpoint, on a timer and after a trial checkpointed
`num_to_keep` times; that forced snapshot comes after the oldest checkpoint is deleted, so a
driver killed in between leaves a state naming a deleted checkpoint, and after `Tuner.restore`
Tune fails that trial ("Could not recover from checkpoint as it does not exist on storage
anymore") or errors deleting checkpoints it remembers but that are gone.

So Tune keeps every checkpoint it knows of, and `CheckpointKeeper` does the rest from the driver:
- after each reported checkpoint, it deletes the trial's other checkpoint folders except the one
  reported before it (two kept, as before);
- before a restored trial starts, a missing recorded checkpoint is replaced by a copy of the
  trial's most recently written one. Every checkpoint `fit` writes holds the whole training
  state (head, optimiser, scheduler, epoch, selection state), so a newer checkpoint of the same
  trial is a valid, further-along substitute. The copy carries `REPLAY_MARKER`: the trial
  first reports the copied checkpoint's epoch again (the dead driver may never have received
  it; the tracking callback skips epochs MLflow already holds), then trains on from there.
"""

from __future__ import annotations

import logging
import re
from pathlib import PurePosixPath
from typing import Any

import pyarrow.fs as pafs
from ray.tune import Callback
from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)")
REPLAY_MARKER = "neuron-replay"
"""A file in a repaired checkpoint: the trial re-reports the checkpoint's epoch before going on
(the driver that died may never have received that report)."""


class CheckpointKeeper(Callback):
    """Keeps the last two checkpoints of each trial (by report order) and, before any restored
    trial starts, repairs a missing recorded checkpoint (same storage filesystem: local, NFS
    or s3)."""

    def __init__(self) -> None:
        self._checked: set[str] = set()
        self._previous: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"_checked": set(), "_previous": {}}

    def on_checkpoint(
        self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any
    ) -> None:
        keep = {checkpoint.path, self._previous.get(trial.trial_id)}
        self._previous[trial.trial_id] = checkpoint.path
        try:
            prune_checkpoints(checkpoint.filesystem, checkpoint.path, keep)
        except OSError as error:  # storage hiccup: the folders are removed next time
            logger.warning("trial %s: could not prune checkpoints: %s", trial.trial_id, error)

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        for trial in trials:
            if trial.trial_id in self._checked or trial.status not in (
                Trial.PENDING,
                Trial.PAUSED,
            ):
                continue
            self._checked.add(trial.trial_id)
            checkpoint = trial.checkpoint
            if checkpoint is None:
                continue
            try:
                replaced = repair_checkpoint(checkpoint.filesystem, checkpoint.path)
            except OSError as error:  # Tune then fails this trial with its own message
                logger.warning(
                    "trial %s: could not repair its checkpoint: %s", trial.trial_id, error
                )
                continue
            if replaced is not None:
                logger.warning(
                    "trial %s: its recorded checkpoint %s was deleted (driver stopped "
                    "between Tune's checkpoint pruning and its state snapshot); resuming "
                    "from the newer %s instead",
                    trial.trial_id,
                    checkpoint.path,
                    replaced,
                )


def _checkpoint_folders(filesystem: pafs.FileSystem, parent: str) -> list[tuple[int, str]]:
    """(index, path) of the `checkpoint_NNNNNN` folders in `parent` (none if it is absent)."""
    entries = filesystem.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    return [
        (int(match.group(1)), entry.path)
        for entry in entries
        if entry.type == pafs.FileType.Directory
        and (match := CHECKPOINT_NAME.fullmatch(PurePosixPath(entry.path).name))
    ]


def prune_checkpoints(filesystem: pafs.FileSystem, reported: str, keep: set[str | None]) -> None:
    """Delete the checkpoint folders beside `reported` that are not in `keep`."""
    for _, path in _checkpoint_folders(filesystem, str(PurePosixPath(reported).parent)):
        if path not in keep:
            filesystem.delete_dir(path)


def _last_written(filesystem: pafs.FileSystem, folder: str) -> float:
    """The newest modification time of the files in `folder` (0 when there are none)."""
    files = filesystem.get_file_info(pafs.FileSelector(folder, recursive=True))
    times = [f.mtime.timestamp() for f in files if f.type == pafs.FileType.File and f.mtime]
    return max(times, default=0.0)


def repair_checkpoint(filesystem: pafs.FileSystem, path: str) -> str | None:
    """If `path` (a `checkpoint_NNNNNN` folder) is missing and the trial has other checkpoint
    folders, copy the most recently written one to `path` and return its path; else change
    nothing and return None. (Written last, not numbered last: after a restore Tune numbers
    new checkpoints on from the restored one.)"""
    if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        return None
    if CHECKPOINT_NAME.fullmatch(PurePosixPath(path).name) is None:
        return None
    siblings = [
        found for _, found in _checkpoint_folders(filesystem, str(PurePosixPath(path).parent))
    ]
    if not siblings:
        return None
    source = max(siblings, key=lambda folder: (_last_written(filesystem, folder), folder))
    partial = f"{path}.partial"
    filesystem.delete_dir_contents(partial, missing_dir_ok=True)
    filesystem.create_dir(partial, recursive=True)
    pafs.copy_files(
        source, partial, source_filesystem=filesystem, destination_filesystem=filesystem
    )
    with filesystem.open_output_stream(f"{partial}/{REPLAY_MARKER}") as marker:
        marker.write(f"copied from {source}\n".encode())
    filesystem.move(partial, path)  # a rename on local and NFS storage
    return source
