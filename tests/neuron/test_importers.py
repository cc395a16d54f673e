"""Every importer round-trips data written in its original format; failures are atomic and named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neuron.classes import NTU60_CLASSES, NW_UCLA_CLASSES, PKU_MMD_CLASSES
from neuron.dataset import DatasetError, SkeletonTable
from neuron.features import open_feature_table
from neuron.importers import IMPORT_FORMATS, dataset_summary, import_dataset, ntu_raw
from neuron.importers.npz import iter_npz_rows
from neuron.importers.ntu_raw import read_ntu_skeleton, select_bodies
from neuron.importers.synse import load_synse_features
from neuron.joints import (
    KINECT_V1_TO_NTU,
    NTU_PARENTS,
    joint_weights_from_map,
    kinect_v1_joint_weights,
    map_joints,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NTU_RAW = SHARED_DATA / "ntu_raw_samples"
NW_UCLA = SHARED_DATA / "nw_ucla" / "all_sqe"


def _require(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is absent (real data lives in ../shared/data beside the repository)")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _float32_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random float32 coordinates whose shortest decimal text reads back exactly."""
    return rng.uniform(-2, 4, size=shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# ntu-raw


def write_skeleton(
    path: Path, frames: list[list[tuple[str, np.ndarray]]], newline: str = "\n"
) -> None:
    """Write a Kinect v2 `.skeleton` file: per frame a list of (body id, (25, 3) joints)."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body_id, joints in bodies:
            lines.append(f"{body_id} 0 1 1 1 1 0 0.01119184 -0.256052 2")
            lines.append("25")
            for x, y, z in joints.tolist():  # float64 text of float32 values: exact round trip
                lines.append(f"{x!r} {y!r} {z!r} 336.5 192.8 1184.5 489.4 -0.22 0.034 0.97 -0.10 2")
    path.write_bytes((newline.join(lines) + newline).encode("ascii"))


def _two_body_frames(
    rng: np.random.Generator, frames: int = 15
) -> tuple[list, np.ndarray, np.ndarray]:
    calm = _float32_values(rng, (frames, 25, 3)) * np.float32(0.01) + np.float32(1.0)
    lively = _float32_values(rng, (frames, 25, 3))
    content = [[("111", calm[t]), ("222", lively[t])] for t in range(frames)]
    return content, calm, lively


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_skeleton_coordinates_read_back_exactly(tmp_path: Path, newline: str) -> None:
    rng = np.random.default_rng(0)
    content, calm, lively = _two_body_frames(rng)
    content[3] = []  # a frame with no body
    content[4] = content[4][1:]  # body 111 lost for one frame
    path = tmp_path / "S001C002P003R001A005.skeleton"
    write_skeleton(path, content, newline)
    skeleton = read_ntu_skeleton(path)
    assert skeleton.joints.shape == (15, 2, 25, 3)
    assert skeleton.body_ids == ("111", "222")
    assert skeleton.tracked.sum(axis=0).tolist() == [13, 14]
    expected_calm = calm.copy()
    expected_calm[3:5] = 0
    np.testing.assert_array_equal(skeleton.joints[:, 0], expected_calm)
    expected_lively = lively.copy()
    expected_lively[3] = 0
    np.testing.assert_array_equal(skeleton.joints[:, 1], expected_lively)
    # The body with more motion energy comes first.
    selected = select_bodies(skeleton, max_bodies=2)
    np.testing.assert_array_equal(selected[:, 0], expected_lively)
    assert select_bodies(skeleton, max_bodies=1).shape == (15, 1, 25, 3)


def test_short_spurious_bodies_rank_after_long_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    steady = [_float32_values(rng, (25, 3)) * np.float32(0.01) for _ in range(20)]
    frames = [[("1", steady[t])] for t in range(20)]
    for t in range(3):  # a jumpy ghost seen in 3 frames only
        frames[t].append(("9", _float32_values(rng, (25, 3)) * np.float32(50)))
    path = tmp_path / "S001C001P001R001A001.skeleton"
    write_skeleton(path, frames)
    selected = select_bodies(read_ntu_skeleton(path), max_bodies=1)
    np.testing.assert_array_equal(selected[:, 0], np.stack(steady))


def _body_line_numbers(frames: list[list[tuple[str, np.ndarray]]]) -> list[int]:
    """1-based line of each body line in a file written by write_skeleton."""
    numbers, line = [], 2
    for bodies in frames:
        line += 1
        for _ in bodies:
            numbers.append(line)
            line += 27
    return numbers


def test_malformed_skeleton_names_file_and_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    content, _, _ = _two_body_frames(rng, frames=4)
    path = tmp_path / "S001C001P001R001A002.skeleton"
    write_skeleton(path, content, "\r\n")
    lines = path.read_bytes().decode().split("\r\n")
    body_line = _body_line_numbers(content)[3]  # frame 1, second body
    bad_line = body_line + 2 + 6  # its 7th joint
    lines[bad_line - 1] = "0.1 0.2 nan-ish 1 2 3 4 5 6 7 8 2"
    path.write_bytes("\r\n".join(lines).encode())
    with pytest.raises(
        DatasetError,
        match=rf"S001C001P001R001A002\.skeleton:{bad_line}: expected a joint line of 12 numbers",
    ):
        read_ntu_skeleton(path)

    truncated = tmp_path / "S001C001P001R001A003.skeleton"
    truncated.write_text("\n".join(path.read_text().splitlines()[:40]) + "\n")
    with pytest.raises(
        DatasetError, match=r"A003\.skeleton:41: expected a joint line, found 'end of file'"
    ):
        read_ntu_skeleton(truncated)

    wrong_count = tmp_path / "S001C001P001R001A004.skeleton"
    wrong_count.write_text("2\n0\nseven\n")
    with pytest.raises(
        DatasetError, match=r"A004\.skeleton:3: expected the body count of a frame, found 'seven'"
    ):
        read_ntu_skeleton(wrong_count)

    trailing = tmp_path / "S001C001P001R001A005.skeleton"
    trailing.write_text("1\n0\nextra\n")
    with pytest.raises(
        DatasetError, match=r"A005\.skeleton:3: expected the end of the file after 1 frames"
    ):
        read_ntu_skeleton(trailing)


def _ntu_folder(tmp_path: Path) -> Path:
    """Five .skeleton files: two good, one empty, one malformed, one on the missing list."""
    folder = tmp_path / "nturgbd_skeletons"
    folder.mkdir()
    rng = np.random.default_rng(3)
    one = [[("5", _float32_values(rng, (25, 3)))] for _ in range(6)]
    write_skeleton(folder / "S001C001P001R001A001.skeleton", one)
    two, _, _ = _two_body_frames(rng, frames=8)
    write_skeleton(folder / "S002C003P003R002A058.skeleton", two, "\r\n")
    write_skeleton(folder / "S001C002P001R001A010.skeleton", [[], [], []])
    (folder / "S001C002P002R001A011.skeleton").write_text(
        "3\n1\n72057 0 1 1 1 1 0 0 0 2\n25\n1 2 3\n"
    )
    write_skeleton(folder / "S001C002P005R002A008.skeleton", one)
    (folder / "NTU_RGBD_samples_with_missing_skeletons.txt").write_text(
        "302 of the captured samples ... have missing skeletons.\n\nS001C002P005R002A008\nS001C002P006R001A008\n"
    )
    return folder


def test_ntu_raw_import_round_trip_and_skips(tmp_path: Path) -> None:
    folder = _ntu_folder(tmp_path)
    out = tmp_path / "ntu.arrow"
    summary = import_dataset("ntu-raw", folder, out, benchmark="ntu60-xsub", progress=False)
    assert summary["sequences"] == 2
    assert summary["classes"] == 60
    assert (summary["train"], summary["test"]) == (1, 1)
    reasons = {entry["item"]: entry["reason"] for entry in summary["skipped"]}
    assert (
        reasons["S001C002P005R002A008.skeleton"]
        == "listed in NTU_RGBD_samples_with_missing_skeletons.txt"
    )
    assert reasons["S001C002P001R001A010.skeleton"] == "no body in any frame"
    assert (
        "S001C002P002R001A011.skeleton:5: expected a joint line of 12 numbers"
        in reasons["S001C002P002R001A011.skeleton"]
    )
    table = SkeletonTable(out)
    assert table.sample_ids == ["S001C001P001R001A001", "S002C003P003R002A058"]
    assert table.labels.tolist() == [0, 57]
    assert table.subject.tolist() == [1, 3]
    assert table.view.tolist() == [1, 3]
    assert table.setup.tolist() == [1, 2]
    assert table.partition.tolist() == ["train", "test"]
    assert table.num_bodies.tolist() == [1, 2]
    assert table.info.class_names == NTU60_CLASSES
    expected = read_ntu_skeleton(folder / "S001C001P001R001A001.skeleton").joints
    np.testing.assert_array_equal(table.sequence(0), expected)


def test_ntu_raw_import_on_several_processes_equals_one(tmp_path: Path) -> None:
    folder = _ntu_folder(tmp_path)
    rng = np.random.default_rng(4)
    for i in range(1, 81):  # enough files for the process pool (ordered_map's min_items)
        frames = [[(str(i), _float32_values(rng, (25, 3)))] for _ in range(1 + i % 7)]
        name = f"S003C00{1 + i % 3}P{1 + i % 40:03d}R{1 + i // 40:03d}A{1 + i % 60:03d}"
        write_skeleton(folder / f"{name}.skeleton", frames)
    (folder / "S003C001P039R009A002.skeleton").write_text("2\n1\nbroken\n")
    summaries, tables = [], []
    for workers in (1, 2):
        out = tmp_path / f"ntu-{workers}.arrow"
        summaries.append(
            import_dataset(
                "ntu-raw", folder, out, benchmark="ntu60-xsub", progress=False, workers=workers
            )
        )
        tables.append(SkeletonTable(out))
    one, two = tables
    assert summaries[0]["sequences"] == summaries[1]["sequences"] == 82
    assert summaries[0]["skipped"] == summaries[1]["skipped"]
    assert len(summaries[0]["skipped"]) == 4  # missing list, no body, two malformed
    assert one.sample_ids == two.sample_ids and one.labels.tolist() == two.labels.tolist()
    assert one.partition.tolist() == two.partition.tolist()
    for row in range(len(one.sample_ids)):
        np.testing.assert_array_equal(one.sequence(row), two.sequence(row))


def test_ntu_raw_strict_import_stops_and_leaves_nothing(tmp_path: Path) -> None:
    folder = _ntu_folder(tmp_path)
    out_folder = tmp_path / "out"
    with pytest.raises(
        DatasetError, match=r"A011\.skeleton:5: .*strict import: nothing was written"
    ):
        import_dataset(
            "ntu-raw",
            folder,
            out_folder / "ntu.arrow",
            benchmark="ntu60-xsub",
            progress=False,
            strict=True,
        )
    assert _leftovers(out_folder) == []


def test_ntu_raw_failure_midway_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _ntu_folder(tmp_path)
    real_reader = ntu_raw.read_ntu_skeleton
    calls = []

    def failing_reader(path: Path) -> ntu_raw.NtuSkeleton:
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("disk vanished")
        return real_reader(path)

    monkeypatch.setattr(ntu_raw, "read_ntu_skeleton", failing_reader)
    out = tmp_path / "out" / "ntu.arrow"
    out.parent.mkdir()
    with pytest.raises(RuntimeError, match="disk vanished"):
        import_dataset("ntu-raw", folder, out, benchmark="ntu60-xsub", progress=False, workers=1)
    assert len(calls) == 2
    assert _leftovers(out.parent) == []


def test_ntu_raw_benchmark_rules(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    rng = np.random.default_rng(4)
    one = [[("5", _float32_values(rng, (25, 3)))] for _ in range(3)]
    write_skeleton(folder / "S001C001P001R001A001.skeleton", one)
    write_skeleton(folder / "S018C001P045R001A061.skeleton", one)
    summary = import_dataset(
        "ntu-raw", folder, tmp_path / "60.arrow", benchmark="ntu60-xview", progress=False
    )
    assert summary["sequences"] == 1
    assert "not part of NTU RGB+D 60" in summary["skipped"][0]["reason"]
    summary = import_dataset(
        "ntu-raw", folder, tmp_path / "120.arrow", benchmark="ntu120-xset", progress=False
    )
    assert SkeletonTable(tmp_path / "120.arrow").partition.tolist() == ["test", "train"]
    assert summary["classes"] == 120
    with pytest.raises(
        DatasetError, match="ntu-raw: benchmark None; the raw NTU import needs one of ntu60-xsub"
    ):
        import_dataset("ntu-raw", folder, tmp_path / "x.arrow", progress=False)
    with pytest.raises(DatasetError, match="ntu-raw: benchmark 'nwucla-xview'"):
        import_dataset(
            "ntu-raw", folder, tmp_path / "x.arrow", benchmark="nwucla-xview", progress=False
        )


@pytest.mark.shared_data
def test_ntu_raw_real_samples(tmp_path: Path) -> None:
    _require(NTU_RAW)
    out = tmp_path / "ntu.arrow"
    summary = import_dataset("ntu-raw", NTU_RAW, out, benchmark="ntu60-xsub", progress=False)
    assert summary["sequences"] == 3
    assert summary["skipped"] == []
    table = SkeletonTable(out)
    assert table.sample_ids == [
        "S001C001P001R001A001",
        "S001C001P001R001A011",
        "S001C003P008R002A058",
    ]
    assert table.labels.tolist() == [0, 10, 57]
    assert table.num_bodies.tolist() == [1, 1, 2]
    assert table.num_frames.tolist() == [103, 82, 70]
    assert table.view.tolist() == [1, 1, 3]
    assert table.partition.tolist() == ["train", "train", "train"]
    handshake = table.sequence(2)
    # Line 5 of the A058 file: joint 1 of the first listed body in frame 1.
    first_listed = np.array([0.7201789, 0.1647426, 3.561895], dtype=np.float32)
    assert any(np.array_equal(handshake[0, body, 0], first_listed) for body in range(2))
    assert np.all(np.abs(handshake) < 10)


# --------------------------------------------------------------------------------------------
# ntu-npz and pku-npz


def _ntu_npz(path: Path, classes: int = 60, one_hot: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = np.zeros((4, 30, 150), np.float32)
    x[0, :20, :75] = rng.normal(size=(20, 75))  # one body, 20 frames
    x[1, :30] = rng.normal(size=(30, 150))  # two bodies, full length
    x[2, :5, :75] = rng.normal(size=(5, 75))
    labels = np.array([0, classes - 1, 7, 3])
    y = np.eye(classes, dtype=np.float32)[labels] if one_hot else labels
    np.savez(path, x_train=x[:3], y_train=y[:3], x_test=x[3:], y_test=y[3:])
    return x, labels


def test_ntu_npz_trims_frames_and_bodies(tmp_path: Path) -> None:
    source = tmp_path / "NTU60_CS.npz"
    x, labels = _ntu_npz(source)
    summary = import_dataset("ntu-npz", source, tmp_path / "ntu.arrow", progress=False)
    assert summary["benchmark"] == "ntu60-xsub" and summary["dataset"] == "ntu60"
    assert summary["sequences"] == 3
    assert summary["skipped"] == [{"item": "test_000000", "reason": "every coordinate is zero"}]
    table = SkeletonTable(tmp_path / "ntu.arrow")
    assert table.sample_ids == ["train_000000", "train_000001", "train_000002"]
    assert table.num_frames.tolist() == [20, 30, 5]
    assert table.num_bodies.tolist() == [1, 2, 1]
    assert table.labels.tolist() == labels[:3].tolist()
    np.testing.assert_array_equal(table.sequence(1), x[1].reshape(30, 2, 25, 3))
    np.testing.assert_array_equal(table.sequence(0)[:, 0], x[0, :20, :75].reshape(20, 25, 3))


def test_ntu_npz_120_classes_and_bad_inputs(tmp_path: Path) -> None:
    source = tmp_path / "NTU120_CSet.npz"
    _ntu_npz(source, classes=120)
    summary = import_dataset(
        "ntu-npz", source, tmp_path / "a.arrow", benchmark="ntu120-xset", progress=False
    )
    assert (summary["dataset"], summary["classes"], summary["benchmark"]) == (
        "ntu120",
        120,
        "ntu120-xset",
    )
    with pytest.raises(DatasetError, match="benchmark 'ntu60-xsub' does not fit ntu120"):
        import_dataset(
            "ntu-npz", source, tmp_path / "b.arrow", benchmark="ntu60-xsub", progress=False
        )

    not_one_hot = tmp_path / "bad_y.npz"
    y = np.eye(60, dtype=np.float32)[[0, 1]]
    y[1, 5] = 1
    np.savez(
        not_one_hot,
        x_train=np.ones((2, 4, 150), np.float32),
        y_train=y,
        x_test=np.ones((1, 4, 150)),
        y_test=y[:1],
    )
    with pytest.raises(DatasetError, match=r"bad_y\.npz: y_train\[1\] is not one-hot"):
        import_dataset("ntu-npz", not_one_hot, tmp_path / "c.arrow", progress=False)

    wrong_shape = tmp_path / "wrong.npz"
    np.savez(
        wrong_shape,
        x_train=np.ones((2, 4, 100)),
        y_train=np.array([0, 1]),
        x_test=np.ones((1, 4, 100)),
        y_test=[0],
    )
    with pytest.raises(
        DatasetError,
        match=r"wrong\.npz: x_train has shape \(2, 4, 100\), expected \(N, T, bodies \* 75\)",
    ):
        import_dataset("ntu-npz", wrong_shape, tmp_path / "d.arrow", progress=False)

    missing = tmp_path / "missing.npz"
    np.savez(missing, x_train=np.ones((2, 4, 150)), y_train=np.array([0, 1]))
    with pytest.raises(DatasetError, match=r"missing\.npz: missing arrays \['x_test', 'y_test'\]"):
        import_dataset("ntu-npz", missing, tmp_path / "e.arrow", progress=False)

    mismatched = tmp_path / "count.npz"
    np.savez(
        mismatched,
        x_train=np.ones((3, 4, 150)),
        y_train=np.array([0, 1]),
        x_test=np.ones((1, 4, 150)),
        y_test=[0],
    )
    with pytest.raises(DatasetError, match=r"count\.npz: x_train has 3 samples but y_train has 2"):
        import_dataset("ntu-npz", mismatched, tmp_path / "f.arrow", progress=False)
    assert not any(p.suffix == ".arrow" and p.name != "a.arrow" for p in tmp_path.iterdir())


def test_ntu_npz_integer_labels_take_the_dataset_from_the_benchmark(tmp_path: Path) -> None:
    source = tmp_path / "integer.npz"
    x = np.ones((3, 4, 150), np.float32)
    np.savez(source, x_train=x[:2], y_train=np.array([0, 5]), x_test=x[2:], y_test=np.array([3]))
    summary = import_dataset(
        "ntu-npz", source, tmp_path / "a.arrow", benchmark="ntu120-xsub", progress=False
    )
    assert (summary["dataset"], summary["classes"]) == ("ntu120", 120)
    summary = import_dataset("ntu-npz", source, tmp_path / "b.arrow", progress=False)
    assert (summary["dataset"], summary["classes"], summary["benchmark"]) == (
        "ntu60",
        60,
        "ntu60-xsub",
    )
    assert SkeletonTable(tmp_path / "b.arrow").labels.tolist() == [0, 5, 3]


def test_npz_rows_are_streamed_from_compressed_archives(tmp_path: Path) -> None:
    source = tmp_path / "compressed.npz"
    x = np.random.default_rng(6).normal(size=(150, 7, 150)).astype(np.float32)
    np.savez_compressed(
        source,
        x_train=x,
        y_train=np.zeros(150, np.int64),
        x_test=x[:2],
        y_test=np.zeros(2, np.int64),
    )
    rows = list(iter_npz_rows(source, "x_train", rows_per_read=64))
    assert len(rows) == 150
    np.testing.assert_array_equal(np.stack(rows), x)


def test_pku_npz_round_trip_and_label_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 3, 64, 25, 2)).astype(np.float32)  # (N, C, T, V, M)
    x[0, :, 40:] = 0
    x[0, ..., 1] = 0
    source = tmp_path / "pku_xsub.npz"
    np.savez(
        source, x_train=x[:2], y_train=np.array([[0], [50]]), x_test=x[2:], y_test=np.array([[12]])
    )
    summary = import_dataset("pku-npz", source, tmp_path / "pku.arrow", progress=False)
    assert (summary["dataset"], summary["benchmark"], summary["classes"]) == (
        "pku_mmd",
        "pku-xsub",
        51,
    )
    table = SkeletonTable(tmp_path / "pku.arrow")
    assert table.info.class_names == PKU_MMD_CLASSES
    assert table.labels.tolist() == [0, 50, 12]
    assert table.partition.tolist() == ["train", "train", "test"]
    assert table.num_frames.tolist() == [40, 64, 64]
    np.testing.assert_array_equal(table.sequence(1), x[1].transpose(1, 3, 2, 0))
    np.testing.assert_array_equal(table.sequence(0)[:, 0], x[0, :, :40, :, 0].transpose(1, 2, 0))

    bad = tmp_path / "pku_1based.npz"
    np.savez(bad, x_train=x[:2], y_train=np.array([1, 51]), x_test=x[2:], y_test=np.array([12]))
    with pytest.raises(
        DatasetError,
        match=r"pku_1based\.npz: y_train\[1\] = 51 is outside 0\.\.50 \(51 classes\); labels must be 0-based",
    ):
        import_dataset("pku-npz", bad, tmp_path / "bad.arrow", progress=False)
    with pytest.raises(
        DatasetError,
        match="benchmark 'ntu60-xsub' does not fit pku_mmd; use one of pku-xsub, pku-xview",
    ):
        import_dataset(
            "pku-npz", source, tmp_path / "bad.arrow", benchmark="ntu60-xsub", progress=False
        )
    assert not (tmp_path / "bad.arrow").exists()


# --------------------------------------------------------------------------------------------
# nw-ucla


def _write_ucla(folder: Path, name: str, skeletons: np.ndarray, label: int) -> None:
    record = {"file_name": name, "skeletons": skeletons.tolist(), "label": label}
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_nw_ucla_mapping_and_partition(tmp_path: Path) -> None:
    folder = tmp_path / "all_sqe"
    folder.mkdir()
    rng = np.random.default_rng(8)
    moving = _float32_values(rng, (12, 20, 3)).astype(np.float64)
    _write_ucla(folder, "a01_s01_e00_v01", moving, 1)
    _write_ucla(folder, "a12_s10_e04_v03", moving[:1], 10)
    (folder / "a02_s02_e01_v02.json").write_text(
        '{"file_name": "a02_s02_e01_v02", "skeletons": [[[1, 2]]], "label": 2}'
    )
    (folder / "a03_s02_e01_v02.json").write_text(
        '{"file_name": "a03_s02_e01_v02",\n "skeletons": [[[1, 2, '
    )
    summary = import_dataset("nw-ucla", folder, tmp_path / "ucla.arrow", progress=False)
    assert summary["sequences"] == 2 and (summary["train"], summary["test"]) == (1, 1)
    reasons = {entry["item"]: entry["reason"] for entry in summary["skipped"]}
    assert (
        "field 'skeletons' has shape (1, 1, 2), expected [T][20][3]"
        in reasons["a02_s02_e01_v02.json"]
    )
    assert reasons["a03_s02_e01_v02.json"].startswith("a03_s02_e01_v02.json:2: not valid JSON")
    table = SkeletonTable(tmp_path / "ucla.arrow")
    assert table.info.class_names == NW_UCLA_CLASSES
    assert table.labels.tolist() == [0, 9]
    assert (table.subject.tolist(), table.view.tolist(), table.setup.tolist()) == (
        [1, 10],
        [1, 3],
        [0, 4],
    )
    joints = table.sequence(0)[:, 0]
    assert joints.shape == (12, 25, 3)
    source = moving.astype(np.float32)
    for kinect, ntu in enumerate(KINECT_V1_TO_NTU):
        np.testing.assert_array_equal(joints[:, ntu], source[:, kinect])
    np.testing.assert_allclose(joints[:, 2], (source[:, 2] + source[:, 3]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(joints[:, 21], source[:, 7])
    np.testing.assert_array_equal(joints[:, 24], source[:, 11])
    assert table.num_frames.tolist() == [12, 1]
    with pytest.raises(
        DatasetError,
        match="nw-ucla: benchmark 'ntu60-xsub'; NW-UCLA has one benchmark, nwucla-xview",
    ):
        import_dataset(
            "nw-ucla", folder, tmp_path / "x.arrow", benchmark="ntu60-xsub", progress=False
        )
    with pytest.raises(
        DatasetError, match=r"a02_s02_e01_v02\.json: field 'skeletons' has shape .*strict import"
    ):
        import_dataset("nw-ucla", folder, tmp_path / "x.arrow", progress=False, strict=True)
    assert not (tmp_path / "x.arrow").exists()


REAL_UCLA_SAMPLES = (
    "a01_s01_e00_v01", "a01_s01_e00_v02", "a01_s01_e00_v03", "a02_s09_e04_v02", "a02_s09_e04_v03",
    "a04_s05_e01_v01", "a05_s03_e02_v03", "a06_s07_e00_v02", "a08_s02_e03_v01", "a09_s04_e01_v03",
    "a11_s06_e02_v02", "a12_s10_e00_v01",
)  # fmt: skip


@pytest.mark.shared_data
def test_nw_ucla_real_subset(tmp_path: Path) -> None:
    _require(NW_UCLA)
    names = [name for name in REAL_UCLA_SAMPLES if (NW_UCLA / f"{name}.json").is_file()]
    assert len(names) >= 10, f"expected the listed samples in {NW_UCLA}"
    folder = tmp_path / "all_sqe"
    folder.mkdir()
    for name in names:
        shutil.copy(NW_UCLA / f"{name}.json", folder)
    summary = import_dataset("nw-ucla", folder, tmp_path / "ucla.parquet", progress=False)
    assert summary["sequences"] == len(names) and summary["skipped"] == []
    table = SkeletonTable(tmp_path / "ucla.parquet")
    rows = {sample_id: index for index, sample_id in enumerate(table.sample_ids)}
    for name in names:
        record = json.loads((NW_UCLA / f"{name}.json").read_text())
        source = np.asarray(record["skeletons"], dtype=np.float32)
        joints = table.sequence(rows[name])
        assert joints.shape == (len(source), 1, 25, 3)
        np.testing.assert_array_equal(joints[:, 0, list(KINECT_V1_TO_NTU)], source)
        assert table.labels[rows[name]] == record["label"] - 1
        assert table.partition[rows[name]] == ("test" if name.endswith("v03") else "train")
    assert table.num_frames[rows["a02_s09_e04_v02"]] == 1


# --------------------------------------------------------------------------------------------
# arrays


def _class_file(tmp_path: Path, count: int, json_list: bool = False) -> Path:
    names = [f"action {i}" for i in range(count)]
    if json_list:
        path = tmp_path / "classes.json"
        path.write_text(json.dumps(names))
    else:
        path = tmp_path / "classes.txt"
        path.write_text("\n".join(names) + "\n\n")
    return path


def test_arrays_npz_variable_length_sequences_without_pickle(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    sequences = [
        rng.normal(size=(t, m, 25, 3)).astype(np.float32) for t, m in ((4, 2), (9, 2), (1, 2))
    ]
    sequences[0][:, 1] = 0  # one body only: the zero second body is dropped
    fields: dict[str, Any] = {
        "labels": np.array([2, 0, 1]), "partition": np.array(["train", "test", "train"]),
        "subject": np.array([1, 2, 3]), "sample_id": np.array(["x", "y", "z"]),
    }  # fmt: skip
    lengths = tmp_path / "lengths.npz"
    np.savez(lengths, joints=np.concatenate(sequences), lengths=[4, 9, 1], **fields)
    offsets = tmp_path / "offsets.npz"
    np.savez(offsets, joints=np.concatenate(sequences), offsets=[0, 4, 13, 14], **fields)
    for source in (lengths, offsets):
        out = tmp_path / f"{source.stem}.arrow"
        summary = import_dataset(
            "arrays", source, out, class_names_file=_class_file(tmp_path, 3, True), progress=False
        )
        assert (summary["sequences"], summary["classes"], summary["dataset"]) == (3, 3, "custom")
        table = SkeletonTable(out)
        assert table.sample_ids == ["x", "y", "z"]
        assert table.class_names == ("action 0", "action 1", "action 2")
        assert table.subject.tolist() == [1, 2, 3] and table.view.tolist() == [-1, -1, -1]
        assert table.num_bodies.tolist() == [1, 2, 2]
        np.testing.assert_array_equal(table.sequence(0), sequences[0][:, :1])
        for index in (1, 2):
            np.testing.assert_array_equal(table.sequence(index), sequences[index])
    joints = np.concatenate(sequences)
    bad_cases: list[tuple[dict[str, Any], str]] = [
        ({"lengths": [4, 9, 2]}, r"lengths sum to 15 frames but joints has 14"),
        ({"lengths": [4, 10, 0]}, r"lengths\[2\] = 0; every sequence needs >= 1 frame"),
        ({"offsets": [0, 4, 13]}, r"offsets must start at 0 and end at 14"),
        ({"offsets": [0, 9, 4, 14]}, r"offsets\[2\] = 4 is not after offsets\[1\] = 9"),
    ]
    for index, (bounds, message) in enumerate(bad_cases):
        source = tmp_path / f"bad{index}.npz"
        np.savez(source, joints=joints, **bounds, **fields)
        with pytest.raises(DatasetError, match=rf"bad{index}\.npz: {message}"):
            import_dataset(
                "arrays", source, tmp_path / "o.arrow",
                class_names_file=_class_file(tmp_path, 3), progress=False,
            )  # fmt: skip


class _WritesMarker:
    """Unpickling this object writes a marker file: proof that a loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_arrays_npz_object_arrays_are_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    for key in ("joints", "sample_id"):
        payload = np.empty(2, dtype=object)
        payload[:] = [_WritesMarker(marker), np.ones((2, 1, 25, 3), np.float32)]
        fields: dict[str, Any] = {
            "joints": np.ones((2, 2, 1, 25, 3), np.float32), "labels": np.array([0, 1]),
            "partition": np.array(["train", "test"]), key: payload,
        }  # fmt: skip
        source = tmp_path / f"evil_{key}.npz"
        np.savez(source, **fields)
        assert not marker.exists()
        with pytest.raises(
            DatasetError,
            match=rf"evil_{key}\.npz: {key} is an object array \(dtype=object\); object arrays "
            r"need pickle to load, and a data file is never unpickled; store the sequences "
            r"concatenated along time instead: np\.savez\(FILE, joints=np\.concatenate",
        ):
            import_dataset(
                "arrays", source, tmp_path / "o.arrow",
                class_names_file=_class_file(tmp_path, 2), progress=False,
            )  # fmt: skip
        assert not marker.exists()
        assert not (tmp_path / "o.arrow").exists()
    # The CLI says the same on stderr, exit code 2, no traceback.
    completed = subprocess.run(
        [sys.executable, "-m", "neuron.cli", "data", "import", "arrays",
         str(tmp_path / "evil_joints.npz"), "--out", str(tmp_path / "o.arrow"),
         "--class-names", str(_class_file(tmp_path, 2))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    assert "joints is an object array" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not marker.exists()


def test_arrays_test_subjects_and_inline_kinect_joint_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    joints = rng.normal(size=(4, 3, 1, 20, 3)).astype(np.float32)  # Kinect v1: 20 joints
    source = tmp_path / "kinect.npz"
    np.savez(source, joints=joints, labels=[0, 1, 0, 1], subject=[1, 2, 3, 2])
    summary = import_dataset(
        "arrays", source, tmp_path / "k.arrow", class_names_file=_class_file(tmp_path, 2),
        joint_map_file="kinect_v1", test_subjects=(2,), progress=False,
    )  # fmt: skip
    assert (summary["train"], summary["test"]) == (2, 2)
    table = SkeletonTable(tmp_path / "k.arrow")
    assert table.partition.tolist() == ["train", "test", "train", "test"]
    expected = map_joints(joints[1], kinect_v1_joint_weights())
    np.testing.assert_allclose(table.sequence(1), expected, rtol=1e-6)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"test_subjects": (7,)}, r"--test-subjects lists \[7\], which no sequence has; the file's subjects are \[1, 2, 3\]"),
        ({"joint_map_file": "ntu25"}, r"--joint-map ntu25: layout 'ntu25' has 25 joints but .*kinect\.npz has 20 per body"),
        ({"joint_map_file": "kinect_v2"}, r"--joint-map kinect_v2: no such file and not a layout name \(ntu25, kinect_v1\)"),
    ]  # fmt: skip
    for options, message in cases:
        options = {"joint_map_file": "kinect_v1", "test_subjects": (2,)} | options
        with pytest.raises(DatasetError, match=message):
            import_dataset(
                "arrays", source, tmp_path / "o.arrow",
                class_names_file=_class_file(tmp_path, 2), progress=False, **options,
            )  # fmt: skip
    np.savez(tmp_path / "nosubject.npz", joints=joints, labels=[0, 1, 0, 1])
    with pytest.raises(DatasetError, match="--test-subjects needs the subject of every sequence"):
        import_dataset(
            "arrays", tmp_path / "nosubject.npz", tmp_path / "o.arrow",
            class_names_file=_class_file(tmp_path, 2), joint_map_file="kinect_v1",
            test_subjects=(2,), progress=False,
        )  # fmt: skip


def test_arrays_npz_dense_with_joint_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    dense = rng.normal(size=(2, 6, 2, 4, 3)).astype(np.float32)  # 4 source joints
    dense[0, :, 1] = 0  # no second body
    joint_map = tmp_path / "map.json"
    joint_map.write_text(json.dumps([0, 3, 7, None]))  # spine_base, head, hand_left; drop the last
    source = tmp_path / "dense.npz"
    np.savez(
        source,
        joints=dense,
        num_frames=np.array([4, 6]),
        labels=np.array([0, 1]),
        view=np.array([1, 2]),
    )
    summary = import_dataset(
        "arrays", source, tmp_path / "d.arrow", benchmark="ntu60-xview",
        class_names_file=_class_file(tmp_path, 2), joint_map_file=joint_map, progress=False,
    )  # fmt: skip
    assert summary["dataset"] == "ntu60" and summary["benchmark"] == "ntu60-xview"
    table = SkeletonTable(tmp_path / "d.arrow")
    assert table.partition.tolist() == ["test", "train"]
    assert table.num_frames.tolist() == [4, 6] and table.num_bodies.tolist() == [1, 2]
    joints = table.sequence(1)
    np.testing.assert_array_equal(joints[:, :, 0], dense[1, :, :, 0])
    np.testing.assert_array_equal(joints[:, :, 3], dense[1, :, :, 1])
    np.testing.assert_array_equal(joints[:, :, 7], dense[1, :, :, 2])
    np.testing.assert_array_equal(joints[:, :, 21], dense[1, :, :, 2])  # hand tip copies the hand
    np.testing.assert_array_equal(
        joints[:, :, 2], dense[1, :, :, 0]
    )  # neck: nearest mapped ancestor is the root
    np.testing.assert_array_equal(joints[:, :, 19], dense[1, :, :, 0])


def test_joint_map_fill_follows_the_tree() -> None:
    weights = joint_weights_from_map([3, 7])  # head and hand_left only: no root mapped
    sources = weights.argmax(axis=1)
    assert weights.sum(axis=1).tolist() == [1.0] * 25
    assert sources[3] == 0 and sources[7] == 1 and sources[22] == 1
    ancestors_of_head = {2, 20, 1, 0}
    for joint in ancestors_of_head:  # spine joints: nearest mapped by tree distance (the head)
        assert sources[joint] == 0
    for joint in range(25):
        chain, parent = set(), NTU_PARENTS[joint]
        while parent >= 0:
            chain.add(parent)
            parent = NTU_PARENTS[parent]
        if 7 in chain:
            assert sources[joint] == 1
    with pytest.raises(DatasetError, match="source joints 0 and 1 both map to NTU joint 3"):
        joint_weights_from_map([3, 3])
    with pytest.raises(
        DatasetError, match="entry 1 is 25; expected an NTU joint index 0..24 or null"
    ):
        joint_weights_from_map([3, 25])


def test_arrays_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    sequences = [rng.normal(size=(t, m, 25, 3)).astype(np.float32) for t, m in ((3, 1), (5, 2))]
    table = pa.table(
        {
            "sample_id": ["p1", "p2"],
            "label": [1, 0],
            "partition": ["test", "train"],
            "joints": [s.reshape(-1).tolist() for s in sequences],
            "num_frames": [3, 5],
            "num_bodies": [1, 2],
            "num_joints": [25, 25],
        }
    )
    source = tmp_path / "mine.parquet"
    pq.write_table(table, source)
    import_dataset(
        "arrays",
        source,
        tmp_path / "p.arrow",
        class_names_file=_class_file(tmp_path, 2),
        progress=False,
    )
    written = SkeletonTable(tmp_path / "p.arrow")
    assert written.sample_ids == ["p1", "p2"] and written.partition.tolist() == ["test", "train"]
    for index, sequence in enumerate(sequences):
        np.testing.assert_array_equal(written.sequence(index), sequence)

    short = table.set_column(
        3,
        "joints",
        pa.array([sequences[0].reshape(-1)[:-1].tolist(), sequences[1].reshape(-1).tolist()]),
    )
    pq.write_table(short, tmp_path / "short.parquet")
    with pytest.raises(
        DatasetError,
        match=r"short\.parquet: row 0: joints has 224 values, not a positive multiple of num_frames \* num_bodies \* 3 = 3 \* 1 \* 3",
    ):
        import_dataset(
            "arrays",
            tmp_path / "short.parquet",
            tmp_path / "b.arrow",
            class_names_file=_class_file(tmp_path, 2),
            progress=False,
        )
    pq.write_table(table.set_column(6, "num_joints", pa.array([25, 20])), tmp_path / "bad.parquet")
    with pytest.raises(
        DatasetError, match=r"bad\.parquet: row 1: num_joints = 20 but its joints list holds 25"
    ):
        import_dataset(
            "arrays",
            tmp_path / "bad.parquet",
            tmp_path / "b.arrow",
            class_names_file=_class_file(tmp_path, 2),
            progress=False,
        )


def test_arrays_errors_name_field_and_value(tmp_path: Path) -> None:
    joints = np.ones((3, 2, 1, 25, 3), np.float32)
    classes = _class_file(tmp_path, 3)
    cases = [
        ({"labels": np.array([0, 3, 1]), "partition": np.array(["train"] * 3)},
         r"labels\[1\] = 3 is outside 0\.\.2 \(3 classes\); --class-names .*classes\.txt lists 3 names"),
        ({"labels": np.array([0, 1, 1]), "partition": np.array(["train", "val", "test"])},
         r"partition\[1\] = 'val'; every entry must be 'train' or 'test'"),
        ({"labels": np.array([0, 1, 1])}, "no partition field; add `partition`"),
        ({"labels": np.array([0, 1]), "partition": np.array(["train"] * 3)}, "labels has 2 entries but there are 3 sequences"),
        ({"labels": np.array([0, 1, 2]), "partition": np.array(["train"] * 3), "sample_id": np.array(["a", "b", "a"])},
         r"sample_id\[2\] = 'a' repeats sample_id\[0\]; ids must be unique"),
    ]  # fmt: skip
    for index, (fields, message) in enumerate(cases):
        source = tmp_path / f"case{index}.npz"
        np.savez(source, joints=joints, **fields)  # type: ignore[arg-type]
        with pytest.raises(DatasetError, match=rf"case{index}\.npz: {message}"):
            import_dataset(
                "arrays", source, tmp_path / "out.arrow", class_names_file=classes, progress=False
            )
    with pytest.raises(DatasetError, match="arrays: --class-names FILE is required"):
        import_dataset("arrays", tmp_path / "case0.npz", tmp_path / "out.arrow", progress=False)
    twenty = tmp_path / "twenty.npz"
    np.savez(twenty, joints=np.ones((1, 2, 1, 20, 3)), labels=[0], partition=["train"])
    with pytest.raises(
        DatasetError,
        match=r"twenty\.npz: 20 joints per body, not the 25 of the NTU layout; give --joint-map kinect_v1",
    ):
        import_dataset(
            "arrays", twenty, tmp_path / "out.arrow", class_names_file=classes, progress=False
        )
    duplicate_names = tmp_path / "dupes.txt"
    duplicate_names.write_text("wave\nkick\nwave\n")
    with pytest.raises(DatasetError, match=r"dupes\.txt: duplicate class names \['wave'\]"):
        import_dataset(
            "arrays",
            twenty,
            tmp_path / "out.arrow",
            class_names_file=duplicate_names,
            progress=False,
        )
    assert not (tmp_path / "out.arrow").exists()


# --------------------------------------------------------------------------------------------
# synse-features, entry-point errors, summaries


def _synse_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path / "synse"
    folder.mkdir()
    rng = np.random.default_rng(12)
    arrays = {
        "train": rng.normal(size=(6, 256)).astype(np.float32), "train_label": np.array([0, 1, 2, 3, 0, 1]),
        "ztest": rng.normal(size=(3, 256)).astype(np.float32), "z_label": np.array([4, 5, 4]),
        "gtest": rng.normal(size=(4, 256)).astype(np.float32), "g_label": np.array([[1], [4], [5], [0]]),
    }  # fmt: skip
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    return folder, arrays


def test_synse_features_round_trip(tmp_path: Path) -> None:
    folder, arrays = _synse_folder(tmp_path)
    loaded = load_synse_features(folder)
    assert loaded["g_label"].tolist() == [1, 4, 5, 0]
    out = tmp_path / "synse.arrow"
    summary = import_dataset("synse-features", folder, out, benchmark="ntu60-xsub", progress=False)
    assert summary["sequences"] == 13 and summary["unseen_classes"] == [4, 5]
    assert summary["subsets"] == {"train": 6, "test_unseen": 3, "test_all": 4}
    table = open_feature_table(out)
    assert (table.channels, table.joints, table.frames) == (256, 1, 1)
    assert table.info["class_names"] == list(NTU60_CLASSES)
    unseen = table.select("test_unseen")
    joint, frame = table.gather(unseen)
    np.testing.assert_array_equal(joint[:, :, 0], arrays["ztest"])
    np.testing.assert_array_equal(frame[:, :, 0], arrays["ztest"])
    assert table.labels[table.select("test_all")].tolist() == [1, 4, 5, 0]
    described = dataset_summary(out)
    assert described["kind"] == "features" and described["subsets"]["train"] == 6


def test_synse_features_errors(tmp_path: Path) -> None:
    folder, arrays = _synse_folder(tmp_path)
    np.save(folder / "z_label.npy", arrays["z_label"][:2])
    with pytest.raises(DatasetError, match=r"z_label\.npy: 2 labels for 3 rows of ztest\.npy"):
        load_synse_features(folder)
    np.save(folder / "z_label.npy", arrays["z_label"])
    (folder / "gtest.npy").unlink()
    with pytest.raises(DatasetError, match="gtest.npy is missing"):
        load_synse_features(folder)
    (tmp_path / "again").mkdir()
    folder, _ = _synse_folder(tmp_path / "again")
    with pytest.raises(DatasetError, match="give --benchmark"):
        import_dataset("synse-features", folder, tmp_path / "s.arrow", progress=False)
    with pytest.raises(DatasetError, match=r"train_label\.npy: labels\[3\] = 3 is outside 0\.\.2"):
        import_dataset(
            "synse-features",
            folder,
            tmp_path / "s.arrow",
            class_names_file=_class_file(tmp_path, 3),
            progress=False,
        )
    assert not (tmp_path / "s.arrow").exists()


def test_entry_point_errors(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError, match="unknown import format 'kinetics'; valid formats: ntu-raw, ntu-npz"
    ) as error:
        import_dataset("kinetics", tmp_path, tmp_path / "x.arrow", progress=False)
    assert all(name in str(error.value) for name in IMPORT_FORMATS)
    with pytest.raises(DatasetError, match="nowhere: no such file or folder"):
        import_dataset("nw-ucla", tmp_path / "nowhere", tmp_path / "x.arrow", progress=False)
    with pytest.raises(DatasetError, match=r"x\.csv: the output must end in \.arrow"):
        import_dataset("nw-ucla", tmp_path, tmp_path / "x.csv", progress=False)
    with pytest.raises(DatasetError, match=r"no \*\.json files found"):
        import_dataset("nw-ucla", tmp_path, tmp_path / "x.arrow", progress=False)
    with pytest.raises(DatasetError, match="unknown benchmark 'ntu60'"):
        import_dataset(
            "synse-features", tmp_path, tmp_path / "x.arrow", benchmark="ntu60", progress=False
        )


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "all_sqe"
    folder.mkdir()
    _write_ucla(folder, "a01_s01_e00_v01", np.ones((3, 20, 3)), 1)
    import_dataset("nw-ucla", folder, tmp_path / "u.arrow", progress=True)
    captured = capsys.readouterr()
    assert "import nw-ucla" in captured.err and captured.out == ""
    import_dataset("nw-ucla", folder, tmp_path / "v.arrow", progress=False)
    assert capsys.readouterr().err == ""
    summary = dataset_summary(tmp_path / "u.arrow")
    assert (
        summary["kind"] == "skeletons"
        and summary["sequences"] == 1
        and summary["dataset"] == "nw_ucla"
    )


def test_class_names_files_keep_line_k_for_label_k_minus_1(tmp_path: Path) -> None:
    from neuron.importers.common import read_class_names

    ok = tmp_path / "ok.txt"
    ok.write_text("  Jump \nSit\nWave\n\n\n")  # trailing blank lines end the file
    assert read_class_names(ok) == ("Jump", "Sit", "Wave")
    for name, text, message in (
        ("gap.txt", "Jump\n\nSit\nWave\n", r"gap\.txt:2: empty class name"),
        ("lead.txt", "\nJump\nSit\n", r"lead\.txt:1: empty class name"),
        (
            "latin1.txt",
            b"Jump\nCaf\xe9\n",
            r"latin1\.txt: not UTF-8 text \(byte 0xe9 at offset 8\)",
        ),
        ("nums.json", '["Jump", 2]', r"nums\.json: entry 1 is 2, not a string"),
    ):
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        with pytest.raises(DatasetError, match=message):
            read_class_names(path)


def test_arrays_with_complex_joints_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "complex.npz"
    joints = np.ones((2, 2, 1, 25, 3), np.complex64)
    np.savez(source, joints=joints, labels=np.array([0, 1]), partition=np.array(["train"] * 2))
    with pytest.raises(
        DatasetError, match=r"complex\.npz: joints has dtype complex64, expected real"
    ):
        import_dataset(
            "arrays",
            source,
            tmp_path / "out.arrow",
            class_names_file=_class_file(tmp_path, 2),
            progress=False,
        )
