"""The `arrays` importer.

A generic container, either
* an `.npz` with `joints` — an object array of (T, M, V, 3) sequences or a dense
  (N, T, M, V, 3) array with optional `num_frames` (N,) giving each sequence's length —
  `labels` (N,) 0-based, and optional `partition` (N,) of "train"/"test", `subject`, `view`,
  `setup` (N,) ints and `sample_id` (N,) strings; or
* a Parquet file with one row per sequence: `label`, `joints` (a flat list of floats,
  row-major (T, M, V, 3)), `num_frames`, `num_bodies`, optional `num_joints` (checked when
  present), `partition`, `sample_id`, `subject`, `view`, `setup`.
`class_names_file` is required (text, one name per line, or a JSON list). `partition` is
required unless `benchmark` names a rule benchmark (`neuron.benchmarks.BENCHMARKS`) and the
subject/view/setup it needs are present. Trailing all-zero bodies are dropped.
`joint_map_file` maps source joints to the NTU 25-joint layout: a JSON list with one NTU
index (or null to drop it) per source joint, or `{"layout": "ntu25"}` (identity, the default
for 25 source joints) or `{"layout": "kinect_v1"}` (the NW-UCLA mapping). An NTU joint
with no source copies its nearest mapped ancestor along `neuron.joints.NTU_PARENTS` (the
hand tip copies the hand); when no ancestor is mapped, the nearest mapped joint in the
kinematic tree (ties: lower index).
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
from neuron.importers.npz import npz_keys, require_keys
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
) -> np.ndarray:
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
        f"{where}: no partition field; add `partition` ('train'/'test' per sequence) or pass a rule benchmark "
        f"({', '.join(BENCHMARK_NAMES)}) together with the subject/view/setup it needs"
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


def _read_arrays_npz(source: Path) -> _ArraysContent:
    where = str(source)
    keys = npz_keys(source)
    require_keys(source, keys, ("joints", "labels"))
    # Object arrays of sequences need pickle; the file is the user's own data.
    with np.load(source, allow_pickle=True) as archive:
        columns: dict[str, Any] = {key: archive[key] for key in keys}
    joints = columns.pop("joints")
    lengths: np.ndarray | None = None
    if joints.dtype == object:
        for index, sequence in enumerate(joints):
            shape = np.shape(sequence)
            if len(shape) != 4 or shape[-1] != 3 or shape[0] < 1 or shape[1] < 1:
                raise DatasetError(
                    f"{where}: joints[{index}] has shape {shape}, expected (T, M, V, 3) with T, M >= 1"
                )
    else:
        if joints.ndim != 5 or joints.shape[-1] != 3 or min(joints.shape[1:]) < 1:
            raise DatasetError(
                f"{where}: joints has shape {joints.shape}, expected (N, T, M, V, 3) "
                "or an object array of (T, M, V, 3) sequences"
            )
        if "num_frames" in columns:
            lengths = _optional_ints(columns, "num_frames", len(joints), where)
            bad = np.flatnonzero((lengths < 1) | (lengths > joints.shape[1]))
            if bad.size:
                raise DatasetError(
                    f"{where}: num_frames[{bad[0]}] = {lengths[bad[0]]}, expected 1..{joints.shape[1]}"
                )
    count = len(joints)
    num_source_joints = int(np.shape(joints[0])[2]) if count else 0
    for index in range(count):
        if np.shape(joints[index])[2] != num_source_joints:
            raise DatasetError(
                f"{where}: joints[{index}] has {np.shape(joints[index])[2]} joints per body, "
                f"joints[0] has {num_source_joints}; every sequence needs the same layout"
            )

    def sequence_at(index: int) -> np.ndarray:
        sequence = np.asarray(joints[index], dtype=np.float32)
        return sequence if lengths is None else sequence[: lengths[index]]

    return _ArraysContent(columns, count, num_source_joints, sequence_at)


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
            "arrays: class_names_file is required (text, one class name per line, or a JSON list)"
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
        f"class_names_file {class_names_file} lists {len(class_names)} names",
    )
    if columns.get("sample_id") is None:
        sample_ids = [f"sequence_{index:06d}" for index in range(count)]
    else:
        sample_ids = [str(sample_id) for sample_id in columns["sample_id"]]
    if len(sample_ids) != count:
        raise DatasetError(
            f"{where}: sample_id has {len(sample_ids)} entries but there are {count} sequences"
        )
    subject = _optional_ints(columns, "subject", count, where)
    view = _optional_ints(columns, "view", count, where)
    setup = _optional_ints(columns, "setup", count, where)
    partition = _resolve_partitions(columns, count, benchmark, where, subject, view, setup)
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
