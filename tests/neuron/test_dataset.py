"""The Arrow/Parquet dataset format: exact round trips, atomic writes and actionable errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from neuron.dataset import DatasetError, DatasetInfo, DatasetWriter, SkeletonTable, open_dataset

INFO = DatasetInfo(
    dataset="toy", class_names=("wave", "kick", "sit"), source="test", benchmark="custom"
)


def _sequences(seed: int = 0) -> list[tuple[str, int, np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    shapes = [(5, 1), (1, 2), (12, 2), (7, 1), (3, 1)]
    return [
        (
            f"s{i}",
            i % 3,
            rng.normal(size=(frames, bodies, 25, 3)).astype(np.float32),
            ("train", "test")[i % 2],
        )
        for i, (frames, bodies) in enumerate(shapes)
    ]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("suffix", [".arrow", ".parquet"])
def test_round_trip_is_exact_across_batches(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    sequences = _sequences()
    with DatasetWriter(path, INFO, batch_rows=2) as writer:
        for index, (sample_id, label, joints, partition) in enumerate(sequences):
            writer.add(sample_id, label, joints, partition, subject=index + 1, view=2, setup=index)
    table = open_dataset(path)
    assert len(table) == len(sequences)
    assert table.info == INFO
    assert table.sample_ids == [s[0] for s in sequences]
    for index, (_, label, joints, partition) in enumerate(sequences):
        np.testing.assert_array_equal(table.sequence(index), joints)
        assert table.labels[index] == label
        assert table.partition[index] == partition
        assert table.subject[index] == index + 1
        assert table.setup[index] == index
    assert list(table.select(partition="test")) == [1, 3]
    assert list(table.select(partition="train", classes=[2])) == [2]
    summary = table.summary()
    assert summary["sequences"] == 5
    assert summary["two_body_sequences"] == 2
    assert (summary["frames_min"], summary["frames_max"]) == (1, 12)
    assert summary["train"] == 3


def test_arrow_sequences_are_zero_copy_views(tmp_path: Path) -> None:
    path = tmp_path / "data.arrow"
    with DatasetWriter(path, INFO) as writer:
        for sample_id, label, joints, partition in _sequences():
            writer.add(sample_id, label, joints, partition)
    sequence = SkeletonTable(path).sequence(2)
    assert not sequence.flags.owndata
    assert not sequence.flags.writeable


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "data.arrow"
    with (
        pytest.raises(RuntimeError, match="interrupted"),
        DatasetWriter(path, INFO, batch_rows=1) as writer,
    ):
        for sample_id, label, joints, partition in _sequences():
            writer.add(sample_id, label, joints, partition)
        raise RuntimeError("interrupted")
    assert _leftovers(tmp_path) == []


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "data.arrow"
    with DatasetWriter(path, INFO) as writer:
        writer.add("old", 0, np.ones((2, 1, 25, 3)), "train")
    with pytest.raises(DatasetError), DatasetWriter(path, INFO) as writer:
        writer.add("new", 7, np.ones((2, 1, 25, 3)), "train")
    assert SkeletonTable(path).sample_ids == ["old"]
    assert _leftovers(tmp_path) == ["data.arrow"]


def test_empty_write_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    with (
        pytest.raises(DatasetError, match="no sequences were written"),
        DatasetWriter(tmp_path / "d.arrow", INFO),
    ):
        pass
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("sample_id", "label", "joints", "partition", "message"),
    [
        (
            "a",
            0,
            np.zeros((4, 1, 20, 3)),
            "train",
            r"a: joints shape \(4, 1, 20, 3\), expected \(T, M, 25, 3\)",
        ),
        ("b", 0, np.zeros((0, 1, 25, 3)), "train", "b: no frames"),
        ("c", 0, np.zeros((3, 0, 25, 3)), "train", r"c: no bodies \(M = 0\)"),
        ("d", 3, np.zeros((3, 1, 25, 3)), "train", r"d: label 3 outside 0\.\.2"),
        ("e", 0, np.zeros((3, 1, 25, 3)), "val", "e: partition 'val', expected one of"),
        ("f", 0, np.full((3, 1, 25, 3), np.nan), "train", "f: joints contain NaN"),
    ],
)
def test_writer_rejects_bad_records(
    tmp_path: Path, sample_id: str, label: int, joints: np.ndarray, partition: str, message: str
) -> None:
    with (
        pytest.raises(DatasetError, match=message),
        DatasetWriter(tmp_path / "d.arrow", INFO) as writer,
    ):
        writer.add(sample_id, label, joints, partition)
    assert _leftovers(tmp_path) == []


def test_duplicate_sample_ids_are_rejected(tmp_path: Path) -> None:
    with (
        pytest.raises(DatasetError, match="s1: sample_id written twice"),
        DatasetWriter(tmp_path / "d.arrow", INFO) as writer,
    ):
        writer.add("s1", 0, np.ones((2, 1, 25, 3)), "train")
        writer.add("s1", 1, np.ones((2, 1, 25, 3)), "test")


def test_output_extension_is_checked(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"d\.npz: the output must end in \.arrow"):
        DatasetWriter(tmp_path / "d.npz", INFO)


def test_reader_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="absent.arrow: no such dataset file"):
        SkeletonTable(tmp_path / "absent.arrow")
    garbage = tmp_path / "garbage.arrow"
    garbage.write_bytes(b"not arrow at all")
    with pytest.raises(DatasetError, match="garbage.arrow: not a readable Arrow/Parquet file"):
        SkeletonTable(garbage)
    foreign = tmp_path / "foreign.arrow"
    with ipc.new_file(str(foreign), pa.schema([("x", pa.int32())])) as writer:
        writer.write_table(pa.table({"x": pa.array([1], pa.int32())}))
    with pytest.raises(DatasetError, match=r"foreign.arrow: missing columns \['sample_id'"):
        SkeletonTable(foreign)


def test_metadata_from_another_format_version_is_refused(tmp_path: Path) -> None:
    metadata = INFO.to_metadata()
    metadata[b"neuron.format"] = b"99"
    with pytest.raises(DatasetError, match="format version 99, this version reads 1; re-import it"):
        DatasetInfo.from_metadata(metadata, tmp_path / "old.arrow")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (b"neuron.class_names", b"{not json", "neuron.class_names is not valid JSON"),
        (b"neuron.num_joints", b'"abc"', "neuron.num_joints is 'abc', not a joint count"),
        (b"neuron.class_names", b'{"a": 1}', "neuron.class_names is .* not a list of names"),
    ],
)
def test_damaged_schema_metadata_names_the_file_and_key(
    tmp_path: Path, key: bytes, value: bytes, message: str
) -> None:
    from neuron.synthetic import write_synthetic

    good = tmp_path / "good.arrow"
    write_synthetic(good, preset="tiny")
    with pa.memory_map(str(good)) as source:
        table = ipc.open_file(source).read_all()
    damaged = tmp_path / "damaged.arrow"
    metadata = dict(table.schema.metadata) | {key: value}
    with pa.OSFile(str(damaged), "wb") as sink:
        schema = table.schema.with_metadata(metadata)
        with ipc.new_file(sink, schema) as writer:
            writer.write_table(table.replace_schema_metadata(metadata))
    with pytest.raises(DatasetError, match=rf"damaged\.arrow: schema metadata {message}"):
        open_dataset(damaged)
