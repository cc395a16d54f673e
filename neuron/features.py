"""The stage-2 feature cache: frozen-encoder features in one memory-mapped Arrow file.

The encoder is frozen in stage 2, so the head only needs two pooled views of its feature map
(N, C, T', V): the time-pooled joint features (N, C, V) and the joint-pooled frame features
(N, C, T'). They are extracted once per (dataset, split, encoder checkpoint, preprocessing) for
`augmented_views` augmented copies of each training sample plus one clean view, and every trial on
a node reads the same file through the page cache (no copies).

Columns:
    row             int64   dataset row the features came from (-1 for imported features)
    label           int32   dataset class id
    subset          string  train | val_seen | val_unseen | test_seen | test_unseen | test_all
    view            int16   0 = clean (deterministic preprocessing), 1..A = augmented
    joint_features  fixed_size_list<float32>[C*V]   row-major (C, V)
    frame_features  fixed_size_list<float32>[C*T']  row-major (C, T')
Schema metadata (`neuron.features.*`): channels, joints, frames, key, and the caller's info.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from neuron.atomic import atomic_path

FEATURE_FORMAT_VERSION = 1


class FeatureCacheError(ValueError):
    """A feature cache is missing, stale or malformed; the message says how to rebuild it."""


def _schema(channels: int, joints: int, frames: int, info: dict[str, Any]) -> pa.Schema:
    metadata = {
        "format": FEATURE_FORMAT_VERSION,
        "channels": channels,
        "joints": joints,
        "frames": frames,
        "info": info,
    }
    return pa.schema(
        [
            ("row", pa.int64()),
            ("label", pa.int32()),
            ("subset", pa.string()),
            ("view", pa.int16()),
            ("joint_features", pa.list_(pa.float32(), channels * joints)),
            ("frame_features", pa.list_(pa.float32(), channels * frames)),
        ],
        metadata={
            f"neuron.features.{k}".encode(): json.dumps(v).encode() for k, v in metadata.items()
        },
    )


class FeatureWriter:
    """Appends feature batches to a cache file; the file appears only when the block exits cleanly."""

    def __init__(
        self, path: str | Path, channels: int, joints: int, frames: int, info: dict[str, Any]
    ) -> None:
        self.path = Path(path)
        self.channels, self.joints, self.frames = channels, joints, frames
        self.schema = _schema(channels, joints, frames, info)
        self.count = 0

    def __enter__(self) -> FeatureWriter:
        self._atomic = atomic_path(self.path)
        self._temporary = self._atomic.__enter__()
        self._writer = ipc.new_file(str(self._temporary), self.schema)
        return self

    def add(
        self,
        joint_features: np.ndarray,
        frame_features: np.ndarray,
        labels: np.ndarray,
        subset: str | np.ndarray,
        view: int | np.ndarray,
        rows: np.ndarray | None = None,
    ) -> None:
        """Append a batch: joint_features (B, C, V), frame_features (B, C, T')."""
        batch = len(labels)
        expected_joint = (batch, self.channels, self.joints)
        expected_frame = (batch, self.channels, self.frames)
        if joint_features.shape != expected_joint or frame_features.shape != expected_frame:
            raise FeatureCacheError(
                f"{self.path}: feature shapes {joint_features.shape} / {frame_features.shape}, "
                f"expected {expected_joint} / {expected_frame}"
            )
        joint_flat = np.ascontiguousarray(joint_features, dtype=np.float32).reshape(-1)  # (B*C*V,)
        frame_flat = np.ascontiguousarray(frame_features, dtype=np.float32).reshape(-1)  # (B*C*T',)
        subsets = np.broadcast_to(np.asarray(subset), (batch,))
        views = np.broadcast_to(np.asarray(view, dtype=np.int16), (batch,))
        rows = (
            np.full(batch, -1, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        )
        arrays = [
            pa.array(rows, pa.int64()),
            pa.array(np.asarray(labels, dtype=np.int32), pa.int32()),
            pa.array(subsets.tolist(), pa.string()),
            pa.array(views, pa.int16()),
            pa.FixedSizeListArray.from_arrays(pa.array(joint_flat), self.channels * self.joints),
            pa.FixedSizeListArray.from_arrays(pa.array(frame_flat), self.channels * self.frames),
        ]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.count += batch

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        try:
            self._writer.close()
        except BaseException as error:
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, traceback)


def write_feature_table(
    path: str | Path,
    *,
    joint_features: np.ndarray,
    frame_features: np.ndarray,
    labels: np.ndarray,
    subsets: np.ndarray,
    views: np.ndarray,
    info: dict[str, Any],
    rows: np.ndarray | None = None,
) -> Path:
    """Write a whole feature table at once (importers of pre-extracted features use this)."""
    _, channels, joints = joint_features.shape
    frames = frame_features.shape[2]
    with FeatureWriter(path, channels, joints, frames, info) as writer:
        writer.add(joint_features, frame_features, labels, subsets, views, rows)
    return Path(path)


@dataclass
class FeatureTable:
    """A memory-mapped feature cache. Feature chunks are zero-copy views into the file; `gather`
    copies only the requested rows."""

    path: Path
    info: dict[str, Any]
    channels: int
    joints: int
    frames: int
    rows: np.ndarray
    labels: np.ndarray
    subsets: np.ndarray
    views: np.ndarray
    joint_chunks: list[np.ndarray]
    """Per record batch (n_i, C, V) float32, read-only views of the mapped file."""
    frame_chunks: list[np.ndarray]
    """Per record batch (n_i, C, T') float32, read-only views of the mapped file."""
    chunk_starts: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, subset: str, view: int | None = 0) -> np.ndarray:
        """Indices of one subset (and one view; None for every view)."""
        mask = self.subsets == subset
        if view is not None:
            mask &= self.views == view
        return np.flatnonzero(mask)

    def gather(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features of the given rows: joint (B, C, V) and frame (B, C, T') float32 copies."""
        indices = np.asarray(indices, dtype=np.int64)
        joint = np.empty((len(indices), self.channels, self.joints), dtype=np.float32)
        frame = np.empty((len(indices), self.channels, self.frames), dtype=np.float32)
        chunk_of = np.searchsorted(self.chunk_starts, indices, side="right") - 1
        for chunk in np.unique(chunk_of):
            where = np.flatnonzero(chunk_of == chunk)
            local = indices[where] - self.chunk_starts[chunk]
            joint[where] = self.joint_chunks[chunk][local]
            frame[where] = self.frame_chunks[chunk][local]
        return joint, frame

    def nbytes(self) -> int:
        return int(
            sum(c.nbytes for c in self.joint_chunks) + sum(c.nbytes for c in self.frame_chunks)
        )


def _chunk_views(
    column: pa.ChunkedArray, width: int, shape: tuple[int, int], path: Path
) -> list[np.ndarray]:
    views = []
    for chunk in column.chunks:
        values = chunk.values.to_numpy(zero_copy_only=True)[chunk.offset * width :]
        if values.size < len(chunk) * width:
            raise FeatureCacheError(
                f"{path}: truncated feature column; delete the file to rebuild it"
            )
        views.append(values[: len(chunk) * width].reshape(len(chunk), *shape))  # (n_i, C, V or T')
    return views


def open_feature_table(path: str | Path) -> FeatureTable:
    """Memory-map a feature cache written by FeatureWriter or write_feature_table."""
    path = Path(path)
    if not path.is_file():
        raise FeatureCacheError(
            f"{path}: no feature cache here (it is built by `neuron features` or `neuron train`)"
        )
    try:
        table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    except (pa.ArrowInvalid, OSError) as error:
        raise FeatureCacheError(
            f"{path}: not a readable feature cache ({error}); delete it to rebuild"
        ) from error
    metadata = {
        k.decode()[len("neuron.features.") :]: json.loads(v)
        for k, v in (table.schema.metadata or {}).items()
        if k.startswith(b"neuron.features.")
    }
    if metadata.get("format") != FEATURE_FORMAT_VERSION:
        raise FeatureCacheError(
            f"{path}: feature format {metadata.get('format')!r}, expected {FEATURE_FORMAT_VERSION}; delete it to rebuild"
        )
    channels, joints, frames = (
        int(metadata["channels"]),
        int(metadata["joints"]),
        int(metadata["frames"]),
    )
    joint_column = table.column("joint_features")
    starts = np.zeros(joint_column.num_chunks + 1, dtype=np.int64)
    starts[1:] = np.cumsum([len(c) for c in joint_column.chunks])
    return FeatureTable(
        path=path,
        info=metadata.get("info", {}),
        channels=channels,
        joints=joints,
        frames=frames,
        rows=table.column("row").to_numpy(),
        labels=table.column("label").to_numpy().astype(np.int64),
        subsets=np.asarray(table.column("subset").to_pylist()),
        views=table.column("view").to_numpy(),
        joint_chunks=_chunk_views(joint_column, channels * joints, (channels, joints), path),
        frame_chunks=_chunk_views(
            table.column("frame_features"), channels * frames, (channels, frames), path
        ),
        chunk_starts=starts,
    )
