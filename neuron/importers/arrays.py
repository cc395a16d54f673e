"""The `arrays` importer: your own skeleton data (the contract is also in the README, "Your own
skeleton data").

SOURCE is either
* an `.npz` (read with `allow_pickle=False`: object arrays are refused with a message saying
  how to convert them) holding `joints` in one of three forms:
  - variable length, concatenated: (sum of T, M, V, 3) float, the sequences one after another
    along time, with `lengths` (N,) frames per sequence or `offsets` (N + 1,) (0, ..., sum T);
  - dense: (N, T, M, V, 3) float with optional `num_frames` (N,) (frames past it are padding);
  and `labels` (N,) 0-based, optional `partition` (N,) of "train"/"test", `subject`, `view`,
  `setup` (N,) ints (-1: unknown) and `sample_id` (N,) strings; or
* a Parquet file with one row per sequence: `label`, `joints` (a flat list of floats,
  row-major (T, M, V, 3)), `num_frames`, `num_bodies`, optional `num_joints` (checked when
  present), `partition`, `sample_id`, `subject`, `view`, `setup`.
Coordinates are metres, M bodies (trailing all-zero bodies are dropped), V joints per body.
`--class-names` is required (text, one name per line, or a JSON list; label i is line i).
The train/test partition comes from, in this order: `--test-subjects` (test iff the subject is
listed; the file needs `subject`), the `partition` field, or a rule benchmark (`--benchmark`,
`neuron.benchmarks.BENCHMARKS`) with the subject/view/setup it needs.
`--joint-map` maps source joints to the NTU 25-joint layout: a layout name (`kinect_v1`, the
20-joint Kinect v1 / NW-UCLA skeleton, or `ntu25`), or a JSON file holding a list with one NTU
index (or null to drop it) per source joint, or `{"layout": "kinect_v1"}`. Without it, 25
source joints are taken as the NTU layout. An NTU joint with no source copies its nearest
mapped ancestor along `neuron.joints.NTU_PARENTS` (the hand tip copies the hand); when no
ancestor is mapped, the nearest mapped joint in the kinematic tree (ties: lower index).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neuron.benchmarks import BENCHMARK_NAMES, BENCHMARKS, partition_of
from neuron.dataset import PARTITIONS, DatasetError, DatasetInfo
from neuron.importers.common import (
    ImportPlan,
    ImportRequest,
    SequenceRecord,
    SkippedItem,
    as_integer_labels,
    check_labels,
    read_class_names,
    trim_sequence,
)
from neuron.importers.npz import npz_header, npz_keys, require_keys
from neuron.joints import map_joints, read_joint_map


def _optional_ints(columns: dict[str, Any], name: str, count: int, where: str) -> np.ndarray:
    if name not in columns or columns[name] is None:
        return np.full(count, -1, dtype=np.int64)
    values = as_integer_labels(np.asarray(columns[name]), where, name)
    if len(values) != count:
        raise DatasetError(
            f"{where}: {name} has {len(values)} entries, expected {count} (one per sequence)"
        )
    return values


def _resolve_partitions(
    columns: dict[str, Any],
    count: int,
    benchmark: str | None,
    where: str,
    subject: np.ndarray,
    view: np.ndarray,
    setup: np.ndarray,
    test_subjects: tuple[int, ...] | None = None,
) -> np.ndarray:
    if test_subjects is not None:
        if (subject < 0).all():
            raise DatasetError(
                f"{where}: --test-subjects needs the subject of every sequence, but the file has "
                "no `subject` field (or only -1, unknown); add one, or give `partition`"
            )
        unknown = int((subject < 0).sum())
        if unknown:
            first = int(np.flatnonzero(subject < 0)[0])
            raise DatasetError(
                f"{where}: --test-subjects: {unknown} sequences have an unknown subject (-1), "
                f"the first at index {first}; give every sequence a subject id"
            )
        absent = sorted(set(test_subjects) - set(subject.tolist()))
        if absent:
            raise DatasetError(
                f"{where}: --test-subjects lists {absent}, which no sequence has; the file's "
                f"subjects are {sorted(set(subject.tolist()))}"
            )
        return np.where(np.isin(subject, test_subjects), "test", "train")
    if columns.get("partition") is not None:
        partition = np.asarray(columns["partition"]).astype(str)
        if partition.shape != (count,):
            raise DatasetError(
                f"{where}: partition has shape {partition.shape}, expected ({count},)"
            )
        bad = np.flatnonzero(~np.isin(partition, PARTITIONS))
        if bad.size:
            raise DatasetError(
                f"{where}: partition[{bad[0]}] = {str(partition[bad[0]])!r}; every entry must be 'train' or 'test'"
            )
        return partition
    if benchmark in BENCHMARKS:
        field = BENCHMARKS[benchmark].field
        values = {"subject": subject, "view": view, "setup": setup}[field]
        if (values < 0).any():
            raise DatasetError(
                f"{where}: no partition column, and benchmark {benchmark} needs the {field} of every sequence"
            )
        return np.asarray(
            [partition_of(benchmark, s, v, e) for s, v, e in zip(subject, view, setup, strict=True)]
        )
    raise DatasetError(
        f"{where}: no partition field; add `partition` ('train'/'test' per sequence), give "
        "--test-subjects (e.g. --test-subjects 2,5 with a `subject` field), or pass a rule "
        f"--benchmark ({', '.join(BENCHMARK_NAMES)}) together with the subject/view/setup it needs"
    )


@dataclass
class _ArraysContent:
    """What the two `arrays` containers share: per-sequence fields and a sequence reader."""

    columns: dict[str, Any]
    """Per-sequence fields by name (`labels`, `partition`, `subject`, ...)."""
    count: int
    num_source_joints: int
    sequence_at: Callable[[int], np.ndarray]
    """Index → (T, M, V_src, 3) float32."""


OBJECT_ARRAY_FIX = (
    "object arrays need pickle to load, and a data file is never unpickled; store the "
    "sequences concatenated along time instead: np.savez(FILE, "
    "joints=np.concatenate(sequences), lengths=[len(s) for s in sequences], labels=...), "
    "or a dense (N, T, M, V, 3) array with num_frames, or strings as a '<U' array "
    "(np.array(names, dtype=str)); see the README, 'Your own skeleton data'"
)
"""How to convert an `.npz` that holds object arrays (the message of the error about them)."""


def _read_arrays_npz(source: Path) -> _ArraysContent:
    where = str(source)
    keys = npz_keys(source)
    require_keys(source, keys, ("joints", "labels"))
    for key in keys:  # headers only: nothing is unpickled, even to find out
        if npz_header(source, key)[1].hasobject:
            raise DatasetError(
                f"{where}: {key} is an object array (dtype=object); {OBJECT_ARRAY_FIX}"
            )
    with np.load(source, allow_pickle=False) as archive:
        columns: dict[str, Any] = {key: archive[key] for key in keys}
    joints = columns.pop("joints")
    if joints.dtype.kind not in "fiu":
        raise DatasetError(
            f"{where}: joints has dtype {joints.dtype}, expected real coordinates (float)"
        )
    if "lengths" in columns or "offsets" in columns:
        starts, stops = _concatenated_bounds(columns, joints, where)
        count = len(starts)

        def sequence_at(index: int) -> np.ndarray:
            sequence = joints[starts[index] : stops[index]]  # (T, M, V, 3)
            return np.asarray(sequence, dtype=np.float32)

        num_source_joints = int(joints.shape[2])
        return _ArraysContent(columns, count, num_source_joints, sequence_at)
    if joints.ndim != 5 or joints.shape[-1] != 3 or min(joints.shape[1:]) < 1:
        raise DatasetError(
            f"{where}: joints has shape {joints.shape}, expected (N, T, M, V, 3) with optional "
            "num_frames (N,), or (sum of T, M, V, 3) with lengths (N,) or offsets (N + 1,)"
        )
    lengths: np.ndarray | None = None
    if "num_frames" in columns:
        lengths = _optional_ints(columns, "num_frames", len(joints), where)
        bad = np.flatnonzero((lengths < 1) | (lengths > joints.shape[1]))
        if bad.size:
            raise DatasetError(
                f"{where}: num_frames[{bad[0]}] = {lengths[bad[0]]}, expected 1..{joints.shape[1]}"
            )

    def dense_at(index: int) -> np.ndarray:
        sequence = np.asarray(joints[index], dtype=np.float32)
        return sequence if lengths is None else sequence[: lengths[index]]

    return _ArraysContent(columns, len(joints), int(joints.shape[3]), dense_at)


def _concatenated_bounds(
    columns: dict[str, Any], joints: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) frame of each sequence in a time-concatenated `joints` (sum T, M, V, 3),
    from `lengths` (N,) or `offsets` (N + 1,: 0, then each sequence's end)."""
    if joints.ndim != 4 or joints.shape[-1] != 3 or min(joints.shape[1:]) < 1:
        raise DatasetError(
            f"{where}: joints has shape {joints.shape}; with lengths/offsets it must be the "
            "sequences concatenated along time, (sum of T, M, V, 3)"
        )
    total = joints.shape[0]
    if "lengths" in columns:
        lengths = as_integer_labels(np.asarray(columns.pop("lengths")), where, "lengths")
        bad = np.flatnonzero(lengths < 1)
        if bad.size:
            raise DatasetError(
                f"{where}: lengths[{bad[0]}] = {lengths[bad[0]]}; every sequence needs >= 1 frame"
            )
        if int(lengths.sum()) != total:
            raise DatasetError(
                f"{where}: lengths sum to {int(lengths.sum())} frames but joints has {total} "
                "(its first axis is the sequences concatenated along time)"
            )
        stops = np.cumsum(lengths)
        return stops - lengths, stops
    offsets = as_integer_labels(np.asarray(columns.pop("offsets")), where, "offsets")
    if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != total:
        raise DatasetError(
            f"{where}: offsets must start at 0 and end at {total} (the frames in joints), one "
            f"more entry than sequences; got {len(offsets)} entries from "
            f"{offsets[0] if len(offsets) else None} to {offsets[-1] if len(offsets) else None}"
        )
    bad = np.flatnonzero(np.diff(offsets) < 1)
    if bad.size:
        raise DatasetError(
            f"{where}: offsets[{bad[0] + 1}] = {offsets[bad[0] + 1]} is not after "
            f"offsets[{bad[0]}] = {offsets[bad[0]]}; every sequence needs >= 1 frame"
        )
    return offsets[:-1], offsets[1:]


def _read_arrays_parquet(source: Path) -> _ArraysContent:
    where = str(source)
    if not source.is_file():
        raise DatasetError(f"{source}: no such file; SOURCE must be the .parquet file")
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowInvalid, OSError) as error:
        raise DatasetError(f"{source}: not a readable Parquet file ({error})") from error
    names = parquet.schema_arrow.names
    absent = [name for name in ("label", "joints", "num_frames", "num_bodies") if name not in names]
    if absent:
        raise DatasetError(
            f"{source}: missing columns {absent}; it has {names} (see neuron.importers.arrays)"
        )
    columns = parquet.read(columns=[name for name in names if name != "joints"]).to_pydict()
    columns["labels"] = columns.pop("label")
    frames = np.asarray(columns["num_frames"], dtype=np.int64)
    bodies = np.asarray(columns["num_bodies"], dtype=np.int64)
    chunks = []  # per record batch: (offsets, flat values)
    for batch in parquet.iter_batches(columns=["joints"]):
        column = batch.column(0)
        chunks.append((column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False)))
    count = len(frames)
    sizes = np.concatenate([np.diff(offsets) for offsets, _ in chunks]) if chunks else frames
    per_joint = np.maximum(frames * bodies * 3, 1)
    bad = np.flatnonzero((frames < 1) | (bodies < 1) | (sizes % per_joint != 0))
    if bad.size:
        row = int(bad[0])
        raise DatasetError(
            f"{where}: row {row}: joints has {sizes[row]} values, not a positive multiple of "
            f"num_frames * num_bodies * 3 = {frames[row]} * {bodies[row]} * 3"
        )
    joints_per_row = sizes // per_joint
    if "num_joints" in columns:
        bad = np.flatnonzero(np.asarray(columns["num_joints"]) != joints_per_row)
        if bad.size:
            row = int(bad[0])
            raise DatasetError(
                f"{where}: row {row}: num_joints = {columns['num_joints'][row]} but its joints "
                f"list holds {joints_per_row[row]} joints per body"
            )
    num_source_joints = int(joints_per_row[0]) if count else 0
    bad = np.flatnonzero(joints_per_row != num_source_joints)
    if bad.size:
        row = int(bad[0])
        raise DatasetError(
            f"{where}: row {row} has {joints_per_row[row]} joints per body, row 0 has "
            f"{num_source_joints}; every sequence needs the same layout"
        )
    rows: list[tuple[np.ndarray, int, int]] = [
        (values, int(offsets[local]), int(offsets[local + 1]))
        for offsets, values in chunks
        for local in range(len(offsets) - 1)
    ]

    def sequence_at(index: int) -> np.ndarray:
        values, start, stop = rows[index]
        shape = (int(frames[index]), int(bodies[index]), num_source_joints, 3)
        return values[start:stop].astype(np.float32, copy=False).reshape(shape)  # (T, M, V, 3)

    return _ArraysContent(columns, count, num_source_joints, sequence_at)


def plan(request: ImportRequest) -> ImportPlan:
    """The sequences of an `.npz` or `.parquet` container, mapped to the NTU joint layout."""
    source, benchmark, class_names_file = (
        request.source,
        request.benchmark,
        request.class_names_file,
    )
    if class_names_file is None:
        raise DatasetError(
            "arrays: --class-names FILE is required (text, one class name per line in label "
            "order, or a JSON list)"
        )
    class_names = read_class_names(class_names_file)
    where = str(source)
    if source.suffix == ".npz":
        content = _read_arrays_npz(source)
    elif source.suffix == ".parquet":
        content = _read_arrays_parquet(source)
    else:
        raise DatasetError(
            f"{source}: arrays SOURCE must be an .npz or .parquet file (see neuron.importers.arrays)"
        )
    columns, count = content.columns, content.count
    if count == 0:
        raise DatasetError(f"{where}: no sequences")
    labels = as_integer_labels(np.asarray(columns["labels"]), where, "labels")
    if len(labels) != count:
        raise DatasetError(
            f"{where}: labels has {len(labels)} entries but there are {count} sequences"
        )
    check_labels(
        labels,
        len(class_names),
        where,
        "labels",
        f"--class-names {class_names_file} lists {len(class_names)} names",
    )
    if columns.get("sample_id") is None:
        sample_ids = [f"sequence_{index:06d}" for index in range(count)]
    else:
        sample_ids = [str(sample_id) for sample_id in columns["sample_id"]]
    if len(sample_ids) != count:
        raise DatasetError(
            f"{where}: sample_id has {len(sample_ids)} entries but there are {count} sequences"
        )
    first_seen: dict[str, int] = {}
    for index, sample_id in enumerate(sample_ids):
        if sample_id in first_seen:
            raise DatasetError(
                f"{where}: sample_id[{index}] = {sample_id!r} repeats sample_id"
                f"[{first_seen[sample_id]}]; ids must be unique (or leave sample_id out)"
            )
        first_seen[sample_id] = index
    subject = _optional_ints(columns, "subject", count, where)
    view = _optional_ints(columns, "view", count, where)
    setup = _optional_ints(columns, "setup", count, where)
    partition = _resolve_partitions(
        columns, count, benchmark, where, subject, view, setup, request.test_subjects
    )
    weights = read_joint_map(request.joint_map_file, content.num_source_joints, where)
    dataset = BENCHMARKS[benchmark].dataset if benchmark in BENCHMARKS else "custom"
    info = DatasetInfo(
        dataset=dataset, class_names=class_names, source="arrays", benchmark=benchmark or "custom"
    )

    def items() -> Iterator[SequenceRecord | SkippedItem]:
        for index in range(count):
            trimmed = trim_sequence(map_joints(content.sequence_at(index), weights))
            if trimmed is None:
                yield SkippedItem(sample_ids[index], "every coordinate is zero")
                continue
            yield SequenceRecord(
                sample_id=sample_ids[index],
                label=int(labels[index]),
                joints=trimmed,
                partition=str(partition[index]),
                subject=int(subject[index]),
                view=int(view[index]),
                setup=int(setup[index]),
            )

    return ImportPlan(info=info, total=count, items=items())
