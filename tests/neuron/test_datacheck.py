"""A dataset file is validated when read: every fault is refused with row, column, value, fix;
`neuron data check` lists them all and `neuron data info` reports them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from neuron import cli
from neuron.dataset import DatasetError, DatasetInfo, DatasetWriter, open_dataset

INFO = DatasetInfo(dataset="mini", class_names=("wave", "sit", "jump"), source="test", benchmark="")


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """Six valid rows, two classes' worth of frames, one with two bodies."""
    path = tmp_path / "good.arrow"
    rng = np.random.default_rng(0)
    with DatasetWriter(path, INFO) as writer:
        for row in range(6):
            bodies = 2 if row == 4 else 1
            joints = rng.normal(size=(5 + row, bodies, 25, 3)).astype(np.float32)
            partition = "train" if row < 4 else "test"
            writer.add(f"s{row}", row % 3, joints, partition, subject=row)
    return path


def rewrite(source: Path, out: Path, **columns: pa.Array) -> Path:
    """`source` with some columns replaced (types may change), metadata kept."""
    table = ipc.open_file(pa.memory_map(str(source), "r")).read_all()
    for name, values in columns.items():
        table = table.set_column(table.column_names.index(name), name, values)
    table = table.replace_schema_metadata(INFO.to_metadata())
    if out.suffix == ".parquet":
        pq.write_table(table, out)
    else:
        with ipc.new_file(str(out), table.schema) as writer:
            writer.write_table(table)
    return out


def joints_with(source: Path, row: int, index: int, value: float) -> pa.Array:
    table = ipc.open_file(pa.memory_map(str(source), "r")).read_all()
    rows = [np.asarray(v, dtype=np.float32) for v in table.column("joints").to_pylist()]
    rows[row][index] = value
    return pa.array(rows, type=pa.large_list(pa.float32()))


CASES = {
    "label out of range": (
        lambda g: {"label": pa.array([0, 1, 2, 99, 0, 1], pa.int32())},
        r"column label, row 3 \(sample_id s3\) = 99: outside 0\.\.2 \(the file names 3 classes\)",
    ),
    "negative label": (
        lambda g: {"label": pa.array([0, -1, 2, 0, 0, 1], pa.int32())},
        r"column label, row 1 \(sample_id s1\) = -1: outside 0\.\.2",
    ),
    "float labels": (
        lambda g: {"label": pa.array([0.0, 1.5, 2.0, 0.0, 0.0, 1.0])},
        r"column label, row 0 \(sample_id s0\) = 0\.0: has type double; label must hold "
        r"integers",
    ),
    "duplicate sample_id": (
        lambda g: {"sample_id": pa.array(["s0", "s1", "s2", "s1", "s4", "s5"])},
        r"column sample_id, row 3 \(sample_id s1\) = 's1': duplicate sample_id",
    ),
    "NaN coordinate": (
        lambda g: {"joints": joints_with(g, 2, 17, float("nan"))},
        r"column joints, row 2 \(sample_id s2\) = nan: NaN or infinite coordinates",
    ),
    "inf coordinate": (
        lambda g: {"joints": joints_with(g, 5, 0, float("inf"))},
        r"column joints, row 5 \(sample_id s5\) = inf: NaN or infinite coordinates",
    ),
    "joints length mismatch": (
        lambda g: {"num_frames": pa.array([5, 6, 7, 8, 9, 11], pa.int32())},
        r"column joints, row 5 \(sample_id s5\) = 750: holds this many numbers, but "
        r"num_frames × num_bodies × 25 joints × 3 says otherwise",
    ),
    "unknown partition": (
        lambda g: {"partition": pa.array(["train", "train", "val", "train", "test", "test"])},
        r"column partition, row 2 \(sample_id s2\) = 'val': unknown partition, expected one of "
        r"train, test",
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("suffix", [".arrow", ".parquet"])
def test_a_faulty_dataset_is_refused_with_row_column_value_and_fix(
    good, tmp_path, case, suffix, capsys
) -> None:
    change, message = CASES[case]
    path = rewrite(good, tmp_path / f"bad{suffix}", **change(good))
    with pytest.raises(DatasetError, match=message) as raised:
        open_dataset(path)
    assert "neuron data check" in str(raised.value)
    # `data check` lists it and fails; `data info` reports it and still summarises.
    assert cli.main(["data", "check", str(path)]) == cli.EXIT_BAD_INPUT
    out = capsys.readouterr()
    assert len([line for line in out.out.splitlines() if "problem:" in line]) == 1
    assert "1 problem(s)" in out.err
    assert cli.main(["data", "info", str(path)]) == 0
    info = capsys.readouterr().out
    assert "problems" in info and "sequences" in info


def test_several_problems_are_all_listed_and_a_good_file_passes(good, tmp_path, capsys) -> None:
    assert cli.main(["data", "check", str(good)]) == 0
    assert "no problems" in capsys.readouterr().out
    path = rewrite(
        good,
        tmp_path / "bad.arrow",
        label=pa.array([0, 1, 2, 99, 0, 7], pa.int32()),
        partition=pa.array(["train", "train", "val", "train", "test", "test"]),
        joints=joints_with(good, 1, 3, float("nan")),
    )
    assert cli.main(["data", "check", str(path)]) == cli.EXIT_BAD_INPUT
    lines = [line for line in capsys.readouterr().out.splitlines() if "problem:" in line]
    assert len(lines) == 3
    assert "[2 rows]" in lines[0]  # labels 99 and 7


def test_data_info_on_zero_rows_and_a_wrong_joints_type(good, tmp_path, capsys) -> None:
    table = ipc.open_file(pa.memory_map(str(good), "r")).read_all()
    empty = tmp_path / "empty.arrow"
    with ipc.new_file(str(empty), table.schema) as writer:
        writer.write_table(table.slice(0, 0))
    assert cli.main(["data", "info", str(empty)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "the file has no rows" in out.out
    with pytest.raises(DatasetError, match="the file has no rows"):
        open_dataset(empty)
    strings = pc.cast(table.column("num_frames"), pa.string())
    wrong = rewrite(good, tmp_path / "wrong.arrow", joints=strings)
    assert cli.main(["data", "info", str(wrong)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "has type string; joints must be" in out.out
    assert cli.main(["data", "check", str(wrong)]) == cli.EXIT_BAD_INPUT


def test_the_check_is_vectorised_over_a_large_file(tmp_path) -> None:
    """50 000 rows are checked in well under the time a per-row Python loop would take; the
    bad row is still found exactly."""
    rows = 50_000
    frames = np.full(rows, 2, dtype=np.int32)
    values = np.zeros(rows * 2 * 25 * 3, dtype=np.float32)
    values[(41_234 * 150) + 7] = np.nan
    offsets = np.arange(rows + 1, dtype=np.int64) * 150
    table = pa.table(
        {
            "sample_id": pa.array([f"s{i}" for i in range(rows)]),
            "label": pa.array(np.arange(rows) % 3, pa.int32()),
            "subject": pa.array(np.zeros(rows), pa.int32()),
            "view": pa.array(np.zeros(rows), pa.int32()),
            "setup": pa.array(np.zeros(rows), pa.int32()),
            "partition": pa.array(["train"] * rows),
            "num_frames": pa.array(frames),
            "num_bodies": pa.array(np.ones(rows, np.int32)),
            "joints": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)),
        }
    ).replace_schema_metadata(INFO.to_metadata())
    path = tmp_path / "large.arrow"
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table, max_chunksize=7_000)
    with pytest.raises(DatasetError, match=r"row 41234 \(sample_id s41234\) = nan"):
        open_dataset(path)


def test_one_problem_never_hides_another_in_the_same_column(good, tmp_path, capsys) -> None:
    """A wrong joints length in one row and a NaN in another; an unknown partition in one row
    and a missing one in another: `data check` lists all four."""
    path = rewrite(
        good,
        tmp_path / "two-each.arrow",
        num_frames=pa.array([5, 6, 7, 8, 9, 11], pa.int32()),  # row 5 no longer matches
        joints=joints_with(good, 2, 17, float("nan")),
        partition=pa.array(["validation", None, "train", "train", "test", "test"]),
    )
    assert cli.main(["data", "check", str(path)]) == cli.EXIT_BAD_INPUT
    lines = [line for line in capsys.readouterr().out.splitlines() if "problem:" in line]
    joined = "\n".join(lines)
    assert len(lines) == 4, joined
    assert "column joints, row 5 (sample_id s5) = 750: holds this many numbers" in joined
    assert "column joints, row 2 (sample_id s2) = nan: NaN or infinite" in joined
    assert "column partition, row 1 (sample_id s1)" in joined and "missing value (null)" in joined
    assert "column partition, row 0 (sample_id s0) = 'validation': unknown partition" in joined
