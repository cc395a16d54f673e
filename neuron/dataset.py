"""The one on-disk skeleton format: an Arrow IPC file (or Parquet), one row per sequence.

Columns (see the README for the full schema):
    sample_id  string     e.g. S001C001P001R001A001
    label      int32      0-based class
    subject    int32      performer id (-1 when unknown)
    view       int32      camera / view id (-1 when unknown)
    setup      int32      setup id (-1 when unknown)
    partition  string     "train" or "test" under the file's benchmark
    num_frames int32      T
    num_bodies int32      M stored for this row (1..max)
    joints     large_list<float32>  coordinates in metres, row-major (T, M, V, 3)

Schema metadata (`neuron.*` keys, UTF-8 JSON values): format version, dataset name, class
names, joint layout and count, source, benchmark.

An `.arrow` file is memory-mapped, so every trial process on a node reads the same pages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from neuron.atomic import atomic_path

FORMAT_VERSION = 1
PARTITIONS = ("train", "test")

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("label", pa.int32()),
        ("subject", pa.int32()),
        ("view", pa.int32()),
        ("setup", pa.int32()),
        ("partition", pa.string()),
        ("num_frames", pa.int32()),
        ("num_bodies", pa.int32()),
        ("joints", pa.large_list(pa.float32())),
    ]
)


class DatasetError(ValueError):
    """A dataset file or record is invalid; the message names the file/field and the fix."""


@dataclass(frozen=True)
class DatasetInfo:
    """Schema metadata of a skeleton dataset file."""

    dataset: str
    class_names: tuple[str, ...]
    source: str
    benchmark: str
    joint_layout: str = "ntu25"
    num_joints: int = 25

    def to_metadata(self) -> dict[bytes, bytes]:
        """The `neuron.*` schema metadata (UTF-8 JSON values) written into every dataset file."""
        values = {
            "format": FORMAT_VERSION,
            "dataset": self.dataset,
            "class_names": list(self.class_names),
            "source": self.source,
            "benchmark": self.benchmark,
            "joint_layout": self.joint_layout,
            "num_joints": self.num_joints,
        }
        return {f"neuron.{k}".encode(): json.dumps(v).encode() for k, v in values.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[bytes, bytes] | None, path: Path) -> DatasetInfo:
        """Read the `neuron.*` schema metadata of the file at `path` (named in errors)."""
        metadata = metadata or {}
        values: dict[str, Any] = {}
        for key, raw in metadata.items():
            if not key.startswith(b"neuron."):
                continue
            try:
                values[key.decode()[len("neuron.") :]] = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise DatasetError(
                    f"{path}: schema metadata {key.decode(errors='replace')} is not valid JSON "
                    f"({raw[:40]!r}); the file is damaged: re-import it"
                ) from error
        if "class_names" not in values:
            raise DatasetError(
                f"{path}: no neuron.class_names in the schema metadata; this is not a file written by "
                "`neuron data import` or `neuron data synth` (re-import it)"
            )
        if values.get("format") != FORMAT_VERSION:
            raise DatasetError(
                f"{path}: format version {values.get('format')!r}, this version reads {FORMAT_VERSION}; re-import it"
            )
        names, joints = values["class_names"], values.get("num_joints", 25)
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise DatasetError(
                f"{path}: schema metadata neuron.class_names is {str(names)[:60]!r}, not a list of "
                "names; the file is damaged: re-import it"
            )
        if not (isinstance(joints, int) and joints >= 1):
            raise DatasetError(
                f"{path}: schema metadata neuron.num_joints is {joints!r}, not a joint count; the "
                "file is damaged: re-import it"
            )
        return cls(
            dataset=values.get("dataset", "unknown"),
            class_names=tuple(names),
            source=values.get("source", ""),
            benchmark=values.get("benchmark", ""),
            joint_layout=values.get("joint_layout", "ntu25"),
            num_joints=joints,
        )


class DatasetWriter:
    """Streams sequences into an Arrow IPC or Parquet file, atomically.

    Use as a context manager; the file appears at `path` only when the block exits cleanly.
    """

    def __init__(self, path: str | Path, info: DatasetInfo, batch_rows: int = 256) -> None:
        self.path = Path(path)
        if self.path.suffix not in (".arrow", ".parquet"):
            raise DatasetError(
                f"{self.path}: the output must end in .arrow (memory-mappable) or .parquet"
            )
        self.info = info
        self.schema = SCHEMA.with_metadata(info.to_metadata())
        self.batch_rows = batch_rows
        self.rows: list[dict[str, Any]] = []
        self.count = 0
        self._written_ids: set[str] = set()

    def __enter__(self) -> DatasetWriter:
        self._atomic = atomic_path(self.path)
        self._temporary = self._atomic.__enter__()
        try:
            if self.path.suffix == ".arrow":
                self._writer: Any = ipc.new_file(str(self._temporary), self.schema)
            else:
                self._writer = pq.ParquetWriter(str(self._temporary), self.schema)
        except BaseException as error:
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    def add(
        self,
        sample_id: str,
        label: int,
        joints: np.ndarray,
        partition: str,
        subject: int = -1,
        view: int = -1,
        setup: int = -1,
    ) -> None:
        """Add one sequence; `joints` is (T, M, V, 3) in metres."""
        joints = np.asarray(joints, dtype=np.float32)
        if joints.ndim != 4 or joints.shape[-1] != 3 or joints.shape[2] != self.info.num_joints:
            raise DatasetError(
                f"{sample_id}: joints shape {joints.shape}, expected (T, M, {self.info.num_joints}, 3)"
            )
        if joints.shape[0] < 1:
            raise DatasetError(f"{sample_id}: no frames")
        if joints.shape[1] < 1:
            raise DatasetError(f"{sample_id}: no bodies (M = 0); store absent bodies as zeros")
        if sample_id in self._written_ids:
            raise DatasetError(
                f"{sample_id}: sample_id written twice to {self.path}; sample ids must be unique"
            )
        if not 0 <= label < len(self.info.class_names):
            raise DatasetError(
                f"{sample_id}: label {label} outside 0..{len(self.info.class_names) - 1}"
            )
        if partition not in PARTITIONS:
            raise DatasetError(
                f"{sample_id}: partition {partition!r}, expected one of {PARTITIONS}"
            )
        if not np.isfinite(joints).all():
            raise DatasetError(f"{sample_id}: joints contain NaN or inf")
        self._written_ids.add(sample_id)
        self.rows.append(
            {
                "sample_id": sample_id,
                "label": int(label),
                "subject": int(subject),
                "view": int(view),
                "setup": int(setup),
                "partition": partition,
                "num_frames": int(joints.shape[0]),
                "num_bodies": int(joints.shape[1]),
                "joints": joints.reshape(-1),
            }
        )
        self.count += 1
        if len(self.rows) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        columns = {
            name: [row[name] for row in self.rows] for name in SCHEMA.names if name != "joints"
        }
        flat = np.concatenate([row["joints"] for row in self.rows])
        offsets = np.zeros(len(self.rows) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([row["joints"].size for row in self.rows])
        arrays = [
            pa.array(columns[name], type=SCHEMA.field(name).type)
            for name in SCHEMA.names
            if name != "joints"
        ]
        arrays.append(
            pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float32()))
        )
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.rows = []

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        try:
            try:
                if exc_type is None:
                    if self.count == 0:
                        raise DatasetError(
                            f"{self.path}: no sequences were written; check the source"
                        )
                    self._flush()
            finally:
                # Close in every case so the temporary file is released before it is removed.
                self._writer.close()
        except BaseException as error:
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, traceback)


class SkeletonTable:
    """A read-only view of a dataset file; `.arrow` files are memory-mapped (zero copy)."""

    def __init__(self, path: str | Path, validate: bool = True) -> None:
        """Open `path`; with `validate` (the default), refuse a file whose contents fail
        `neuron.datacheck.find_problems` (`problems` holds them either way)."""
        from neuron.datacheck import find_problems

        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(
                f"{self.path}: no such dataset file (create it with `neuron data import` or `neuron data synth`)"
            )
        try:
            if self.path.suffix == ".arrow":
                source = pa.memory_map(str(self.path), "r")
                self.table = ipc.open_file(source).read_all()
            elif self.path.suffix == ".parquet":
                self.table = pq.read_table(str(self.path))
            else:
                raise DatasetError(f"{self.path}: unknown extension; expected .arrow or .parquet")
        except (pa.ArrowInvalid, OSError) as error:
            raise DatasetError(
                f"{self.path}: not a readable Arrow/Parquet file ({error}); re-import it"
            ) from error
        missing = [n for n in SCHEMA.names if n not in self.table.column_names]
        if missing:
            raise DatasetError(
                f"{self.path}: missing columns {missing}; re-import it with `neuron data import`"
            )
        self.info = DatasetInfo.from_metadata(self.table.schema.metadata, self.path)
        self.problems = find_problems(self.table, self.num_classes, self.info.num_joints)
        if validate and self.problems:
            shown = "; ".join(f"({i + 1}) {p.describe()}" for i, p in enumerate(self.problems[:3]))
            more = f" and {len(self.problems) - 3} more" if len(self.problems) > 3 else ""
            raise DatasetError(
                f"{self.path}: {len(self.problems)} problem(s) in the data: {shown}{more}. "
                f"`neuron data check {self.path}` lists them all"
            )
        self.labels = self._integers("label")
        self.subject = self._integers("subject")
        self.view = self._integers("view")
        self.setup = self._integers("setup")
        self.num_frames = self._integers("num_frames")
        self.num_bodies = self._integers("num_bodies")
        self.partition = np.asarray(
            [str(value) for value in self.table.column("partition").to_pylist()]
        )
        # Zero-copy access to the joints: per row, its chunk's flat float32 values, the row's
        # slice of them and its (T, M, V, 3) shape, precomputed so `sequence` is one lookup.
        self._rows: list[tuple[np.ndarray, int, int, tuple[int, int, int, int]]] = []
        if any(p.column in ("joints", "num_frames", "num_bodies") for p in self.problems):
            return  # opened unvalidated to report the problems: no sequence access
        frames, bodies = self.num_frames.tolist(), self.num_bodies.tolist()
        for chunk in self.table.column("joints").chunks:
            offsets = chunk.offsets.to_numpy().tolist()
            values = chunk.values.to_numpy(zero_copy_only=True)
            for local in range(len(chunk)):
                row = len(self._rows)
                shape = (frames[row], bodies[row], self.info.num_joints, 3)
                self._rows.append((values, offsets[local], offsets[local + 1], shape))

    def _integers(self, name: str) -> np.ndarray:
        """An integer column as int64 (the same values; -1 for any that are not integers, in a
        file opened unvalidated to report its problems)."""
        column = self.table.column(name)
        if pa.types.is_integer(column.type) and column.null_count == 0:
            return column.to_numpy().astype(np.int64)
        try:
            values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        except (TypeError, ValueError, pa.ArrowInvalid):
            return np.full(len(column), -1, dtype=np.int64)
        return np.where(np.isfinite(values), values, -1).astype(np.int64)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def num_classes(self) -> int:
        return len(self.info.class_names)

    @property
    def sample_ids(self) -> list[str]:
        return self.table.column("sample_id").to_pylist()

    def sequence(self, index: int) -> np.ndarray:
        """The joints of row `index`, (T, M, V, 3) float32, without copying."""
        values, start, stop, shape = self._rows[index]
        return values[start:stop].reshape(shape)  # (T, M, V, 3)

    def select(
        self, partition: str | None = None, classes: Sequence[int] | None = None
    ) -> np.ndarray:
        """Row indices of a partition and/or a set of classes."""
        mask = np.ones(len(self), dtype=bool)
        if partition is not None:
            mask &= self.partition == partition
        if classes is not None:
            mask &= np.isin(self.labels, np.asarray(list(classes), dtype=np.int64))
        return np.flatnonzero(mask)

    def summary(self) -> dict[str, Any]:
        """Counts and frame statistics of the file, JSON-serialisable."""
        return {
            "path": str(self.path),
            "dataset": self.info.dataset,
            "benchmark": self.info.benchmark,
            "source": self.info.source,
            "sequences": len(self),
            "classes": self.num_classes,
            "train": int((self.partition == "train").sum()),
            "test": int((self.partition == "test").sum()),
            "subjects": int(len(np.unique(self.subject))),
            "frames_min": int(self.num_frames.min()) if len(self) else 0,
            "frames_mean": float(self.num_frames.mean()) if len(self) else 0.0,
            "frames_max": int(self.num_frames.max()) if len(self) else 0,
            "two_body_sequences": int((self.num_bodies >= 2).sum()),
            "joint_layout": self.info.joint_layout,
            "num_joints": self.info.num_joints,
        }


def open_dataset(path: str | Path) -> SkeletonTable:
    """Open a dataset file written by DatasetWriter (memory-mapped when `.arrow`); refused,
    with the row, column, value and fix, when its contents fail the checks of
    neuron.datacheck."""
    return SkeletonTable(path)
