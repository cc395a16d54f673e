"""Checkpoint pruning and repair on a real (local) pyarrow filesystem."""

from __future__ import annotations

import os

import pyarrow.fs as pafs

from search.checkpoints import prune_checkpoints, repair_checkpoint

LOCAL = pafs.LocalFileSystem()


def make_checkpoint(folder, index: int, epoch: int, written: float) -> str:
    path = folder / f"checkpoint_{index:06d}"
    (path / "sub").mkdir(parents=True)
    for file, text in ((path / "state.pt", f"epoch {epoch}"), (path / "sub" / "c.yaml", "x")):
        file.write_text(text)
        os.utime(file, (written, written))
    return str(path)


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_missing_checkpoint_is_replaced_by_the_last_written_one(tmp_path):
    trial = tmp_path / "trial_a"
    make_checkpoint(trial, 3, 4, written=1000)
    newest = make_checkpoint(trial, 1, 9, written=2000)  # numbered lower after a restore
    missing = trial / "checkpoint_000002"
    assert repair_checkpoint(LOCAL, str(missing)) == newest
    assert (missing / "state.pt").read_text() == "epoch 9"
    assert (missing / "sub" / "c.yaml").read_text() == "x"
    assert names(trial) == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"]


def test_nothing_changes_when_the_checkpoint_exists_or_has_no_sibling(tmp_path):
    trial = tmp_path / "trial_b"
    existing = make_checkpoint(trial, 1, 2, written=1000)
    assert repair_checkpoint(LOCAL, existing) is None
    assert (trial / "checkpoint_000001" / "state.pt").read_text() == "epoch 2"
    assert repair_checkpoint(LOCAL, str(tmp_path / "absent" / "checkpoint_000001")) is None
    assert repair_checkpoint(LOCAL, str(trial / "elsewhere")) is None
    assert names(trial) == ["checkpoint_000001"]


def test_pruning_keeps_only_the_named_checkpoints(tmp_path):
    trial = tmp_path / "trial_c"
    paths = [make_checkpoint(trial, i, i, written=1000 + i) for i in range(1, 5)]
    (trial / "result.json").write_text("{}")
    prune_checkpoints(LOCAL, paths[3], {paths[3], paths[1], None})
    assert names(trial) == ["checkpoint_000002", "checkpoint_000004", "result.json"]
