"""Files from users are data, never code; OS faults and bad files end in one clear line.

Malicious files carry a pickled `os.system` call that would create a marker file if anything
unpickled them; the marker must never appear. OS faults use real mounts (a read-only bind
mount, a tiny tmpfs that fills up) where the tests run as root, and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from neuron import cli
from neuron.config import load_config
from neuron.pretrain import load_encoder, pretrain_encoder
from neuron.safeload import UnreadableFileError, load_torch_file, save_torch_file


class _WritesMarker:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def write_malicious(path: Path, marker: Path, **extra: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"payload": _WritesMarker(marker), **extra}, path)
    return path


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one `error: ...` line on stderr (progress bars aside), and no traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def tiny_args(tmp_path: Path) -> list[str]:
    return [
        "tiny",
        f"run.cache_dir={tmp_path / 'cache'}",
        f"run.output_dir={tmp_path / 'runs'}",
    ]


def test_a_malicious_resume_checkpoint_never_runs(tmp_path, capsys) -> None:
    marker = tmp_path / "MARKER"
    checkpoint = tmp_path / "received" / "epoch-0003"
    write_malicious(checkpoint / "state.pt", marker, epoch=3)
    code = cli.main(["train", *tiny_args(tmp_path), "--resume", str(checkpoint)])
    assert code == cli.EXIT_BAD_INPUT
    err = one_line_error(capsys)
    assert f"{checkpoint / 'state.pt'}: not a readable training checkpoint" in err
    assert "loading it could run code, so it was refused" in err
    assert not marker.exists()
    assert not (tmp_path / "cache").exists(), "nothing is built before the checkpoint is checked"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "wrong keys"])
def test_a_corrupt_resume_checkpoint_is_one_clear_line(tmp_path, capsys, damage) -> None:
    checkpoint = tmp_path / "epoch-0002"
    checkpoint.mkdir()
    state = checkpoint / "state.pt"
    torch.save({"head": {"w": torch.zeros(256)}, "epoch": 2}, state)
    data = state.read_bytes()
    match damage:
        case "truncated":
            state.write_bytes(data[: len(data) // 2])
        case "garbage":
            state.write_bytes(b"not a checkpoint\n" * 40)
        case "empty":
            state.write_bytes(b"")
    code = cli.main(["train", *tiny_args(tmp_path), "--resume", str(checkpoint)])
    assert code == cli.EXIT_BAD_INPUT
    err = one_line_error(capsys)
    assert str(state) in err
    expected = "not a checkpoint written by" if damage == "wrong keys" else "truncated or corrupt"
    assert expected in err
    assert "start a new run" in err


def test_malicious_cache_entries_and_encoders_never_run(tmp_path) -> None:
    """The stage-1 encoder, its resume state and the side-information cache entry: every torch
    file the caches hold (a cache folder may be copied from someone else)."""
    from neuron.dataset import open_dataset
    from neuron.prepare import load_side_information_file, split_samples
    from neuron.synthetic import write_synthetic

    marker = tmp_path / "MARKER"
    cfg = load_config("tiny", {"run.cache_dir": str(tmp_path / "cache")})
    encoder = write_malicious(tmp_path / "encoder.pt", marker, training_classes=[0, 1])
    with pytest.raises(UnreadableFileError, match=r"encoder\.pt: not a readable stage-1 encoder"):
        load_encoder(cfg, encoder, 25, torch.device("cpu"))
    side = write_malicious(tmp_path / "side.pt", marker)
    with pytest.raises(UnreadableFileError, match=r"side\.pt: not a readable side-information"):
        load_side_information_file(side)
    dataset = tmp_path / "tiny.arrow"
    write_synthetic(dataset, preset="tiny", seed=0)
    table = open_dataset(dataset)
    class_split, samples = split_samples(cfg, table)
    out = tmp_path / "encoder-dir"
    write_malicious(out / "last.pt", marker)
    with pytest.raises(UnreadableFileError, match=r"last\.pt: not a readable stage-1 resume state"):
        pretrain_encoder(cfg, table, class_split, samples, out, progress=False)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Operating-system faults on real mounts


@contextlib.contextmanager
def mounted(mountpoint: Path, *commands: list[str]) -> Iterator[Path]:
    """Run `mount` commands onto `mountpoint`; unmount afterwards. Skip where mounting is not
    allowed (not root, no CAP_SYS_ADMIN)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only or tiny file system needs root")
    done = 0
    try:
        for command in commands:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                pytest.skip(f"cannot mount here ({' '.join(command)}: {result.stderr.strip()})")
            done += 1
        yield mountpoint
    finally:
        if done:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    source, target = tmp_path / "ro-source", tmp_path / "read-only"
    source.mkdir()
    (source / "kept.txt").write_text("already here\n")
    with mounted(
        target,
        ["mount", "--bind", str(source), str(target)],
        ["mount", "-o", "remount,bind,ro", str(target)],
    ):
        yield target


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: room for a small file, not for a dataset."""
    target = tmp_path / "tiny-disk"
    with mounted(target, ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(target)]):
        yield target


def _no_partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".partial")]


def test_output_on_a_read_only_file_system(read_only, tmp_path, capsys) -> None:
    out = read_only / "data" / "tiny.arrow"
    code = cli.main(["data", "synth", "--preset", "tiny", "--out", str(out)])
    assert code == cli.EXIT_OS_ERROR
    err = one_line_error(capsys)
    assert str(read_only / "data") in err and "Read-only file system" in err
    assert sorted(p.name for p in read_only.iterdir()) == ["kept.txt"]
    code = cli.main(["train", *tiny_args(tmp_path)[:2], f"run.output_dir={read_only / 'runs'}"])
    assert code == cli.EXIT_OS_ERROR
    err = one_line_error(capsys)
    assert str(read_only / "runs") in err and "read-only" in err
    assert not (tmp_path / "cache").exists(), "nothing is built before the output is checked"


def test_output_under_a_path_whose_parent_is_a_file(tmp_path, capsys) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should be\n")
    code = cli.main(["data", "synth", "--preset", "tiny", "--out", str(blocker / "tiny.arrow")])
    assert code == cli.EXIT_OS_ERROR
    err = one_line_error(capsys)
    assert str(blocker) in err and "is a file, not a folder" in err
    code = cli.main(["train", *tiny_args(tmp_path)[:2], f"run.output_dir={blocker}"])
    assert code == cli.EXIT_OS_ERROR
    assert str(blocker) in one_line_error(capsys)
    assert blocker.read_text() == "a file where a folder should be\n"


def test_a_full_disk_leaves_no_partial_file(tiny_disk, capsys) -> None:
    out = tiny_disk / "tiny.arrow"
    code = cli.main(["data", "synth", "--preset", "tiny", "--out", str(out), "--no-descriptions"])
    assert code == cli.EXIT_OS_ERROR
    err = one_line_error(capsys)
    assert str(out) in err and "No space left on device" in err and "disk is full" in err
    assert list(tiny_disk.iterdir()) == []


def test_a_checkpoint_that_does_not_fit_keeps_the_previous_one_loadable(tiny_disk) -> None:
    target = tiny_disk / "state.pt"
    save_torch_file({"head": torch.ones(1000), "epoch": 1}, target)
    with pytest.raises(OSError) as raised:
        save_torch_file({"head": torch.ones(200_000), "epoch": 2}, target)
    assert raised.value.filename == str(target)
    assert "No space left" in cli.describe_os_error(raised.value)
    loaded = load_torch_file(target, "checkpoint", "")
    assert loaded["epoch"] == 1 and torch.equal(loaded["head"], torch.ones(1000))
    assert _no_partial_files(tiny_disk) == []


def test_an_unexpected_error_is_one_line_naming_the_traceback_file(capsys, monkeypatch) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("something nobody planned for\nsecond line")

    monkeypatch.setattr(cli, "_data_info", broken)
    code = cli.main(["data", "info", "whatever.arrow"])
    assert code == cli.EXIT_UNEXPECTED
    err = one_line_error(capsys)
    assert "unexpected RuntimeError: something nobody planned for" in err
    path = Path(err.split("full traceback: ")[1].split(";")[0])
    assert "Traceback" in path.read_text() and "something nobody planned for" in path.read_text()
    path.unlink()


def test_a_file_never_replaces_a_folder(tmp_path) -> None:
    """An output file aimed at an existing folder (`--metrics-out runs`) leaves the folder and
    everything in it alone; a folder written whole still replaces its previous version."""
    from neuron.atomic import atomic_path, write_text_atomic

    folder = tmp_path / "runs"
    (folder / "cache").mkdir(parents=True)
    (folder / "cache" / "keep.txt").write_text("precious")
    with pytest.raises(IsADirectoryError) as error:
        write_text_atomic(folder, "{}")
    assert error.value.filename == str(folder)
    assert (folder / "cache" / "keep.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # no temporary left behind
    with atomic_path(folder) as temporary:
        temporary.mkdir()
        (temporary / "new.txt").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["new.txt"]


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "synth", "--preset", "tiny", "--out", "{folder}"],
        ["data", "import", "arrays", "{missing}", "--out", "{folder}"],
        ["train", "tiny", "run.output_dir={runs}", "--metrics-out", "{folder}"],
    ],
)
def test_an_output_file_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys, argv) -> None:
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    runs = tmp_path / "runs"
    words = [w.format(folder=folder, missing=tmp_path / "none.npz", runs=runs) for w in argv]
    assert cli.main(words) == 2
    err = capsys.readouterr().err
    assert f"{folder}: this is a folder, not a file" in err and "Traceback" not in err
    assert (folder / "keep.txt").read_text() == "precious"
    assert not runs.exists()  # train stopped before its run folder


def test_synth_checks_its_descriptions_folder_before_writing_the_dataset(tmp_path, capsys) -> None:
    blocker = tmp_path / "descriptions"
    blocker.write_text("a file where the descriptions folder should go\n")
    out = tmp_path / "tiny.arrow"
    code = cli.main(
        ["data", "synth", "--preset", "tiny", "--out", str(out), "--descriptions-out", str(blocker)]
    )
    assert code == 2
    assert f"--descriptions-out {blocker}: this is a file, not a folder" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written: no dataset without its descriptions


def test_a_named_training_run_never_mixes_with_an_earlier_one(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    (runs / "mine").mkdir(parents=True)
    (runs / "mine" / "metrics.json").write_text("{}")
    for name, message in (
        ("mine", "holds an earlier run; choose another name"),
        ("a/b", "--name 'a/b': use letters, digits"),
        ("", "--name '': use letters, digits"),
    ):
        code = cli.main(["train", "tiny", f"run.output_dir={runs}", "--name", name])
        assert code == 2
        assert message in capsys.readouterr().err
    assert [p.name for p in runs.iterdir()] == ["mine"]
    assert (runs / "mine" / "metrics.json").read_text() == "{}"
