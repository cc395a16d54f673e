"""Import faults: a `.skeleton` file with NaN coordinates is skipped like any malformed file,
and the parsing workers die with an import killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neuron.dataset import DatasetError, SkeletonTable
from neuron.importers import import_dataset
from tests.neuron.test_importers import _float32_values, _ntu_folder, write_skeleton
from tests.search.helpers import descendants, end_processes


def _with_nan_file(tmp_path: Path) -> Path:
    folder = _ntu_folder(tmp_path)
    rng = np.random.default_rng(5)
    frames = [[("7", _float32_values(rng, (25, 3)))] for _ in range(4)]
    path = folder / "S001C001P002R001A003.skeleton"
    write_skeleton(path, frames)
    lines = path.read_text().splitlines()
    # Frame 3's body: frame count, then per frame: body count, body line, joint count, 25 joints.
    bad_line = 1 + 2 * 28 + 3 + 4  # the 4th joint line of frame 3 (1-based)
    fields = lines[bad_line - 1].split()
    fields[1] = "nan"
    lines[bad_line - 1] = " ".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return folder


def test_a_skeleton_file_with_nan_is_skipped_and_listed(tmp_path) -> None:
    folder = _with_nan_file(tmp_path)
    out = tmp_path / "ntu.arrow"
    summary = import_dataset("ntu-raw", folder, out, benchmark="ntu60-xsub", progress=False)
    reasons = {entry["item"]: entry["reason"] for entry in summary["skipped"]}
    assert (
        "S001C001P002R001A003.skeleton:64: expected a joint line of 12 numbers"
        in (reasons["S001C001P002R001A003.skeleton"])
    )
    assert summary["sequences"] == 2  # the other good files are all there
    assert SkeletonTable(out).sample_ids == ["S001C001P001R001A001", "S002C003P003R002A058"]
    strict = tmp_path / "strict" / "ntu.arrow"
    with pytest.raises(DatasetError, match=r"strict import: nothing was written"):
        import_dataset(
            "ntu-raw", folder, strict, benchmark="ntu60-xsub", progress=False, strict=True
        )
    assert not strict.parent.exists() or list(strict.parent.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_an_import_killed_by_sigkill(tmp_path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(6)
    body = _float32_values(rng, (25, 3))
    frames = [[("1", body)] for _ in range(150)]
    write_skeleton(folder / "S001C001P001R001A001.skeleton", frames)
    text = (folder / "S001C001P001R001A001.skeleton").read_text()
    for i in range(2, 1500):  # enough work that the import is still running when killed
        (
            folder / f"S001C001P{1 + i % 40:03d}R{1 + i // 40:03d}A{1 + i % 60:03d}.skeleton"
        ).write_text(text)
    out = tmp_path / "out" / "ntu.arrow"
    command = [
        str(Path(sys.executable).parent / "neuron"),
        "data", "import", "ntu-raw", str(folder),
        "--out", str(out), "--benchmark", "ntu60-xsub", "--workers", "2",
    ]  # fmt: skip
    importer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and importer.poll() is None:
            time.sleep(0.2)
            workers = descendants(importer.pid)
        assert len(workers) >= 2, "the import never started its workers"
        time.sleep(1.0)  # mid-import
        os.kill(importer.pid, signal.SIGKILL)
        assert importer.wait(timeout=30) == -signal.SIGKILL, "the import ended before the kill"
        deadline = time.monotonic() + 20
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [pid for pid in workers if _running(pid)]
        assert alive == [], f"workers {alive} outlived the killed import"
        assert not out.exists(), "a killed import must leave no complete-looking output"
    finally:
        end_processes(workers)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a reaped-later child of the dead importer counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
