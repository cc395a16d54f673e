"""Reading `.npz` containers without loading them whole, and the import of the preprocessed
`.npz` formats (`ntu-npz`, `pku-npz`: `x_train`, `y_train`, `x_test`, `y_test`). What differs
between those formats (labels, array shapes, dataset and benchmark, the layout of a row) is a
`PreprocessedLayout` in the format's own module."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuron.dataset import PARTITIONS, DatasetError, DatasetInfo
from neuron.importers.common import (
    ImportPlan,
    ImportRequest,
    SequenceRecord,
    SkippedItem,
    as_integer_labels,
    check_labels,
    class_names_for,
    trim_sequence,
)


def npz_keys(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; SOURCE must be the .npz file")
    try:
        with zipfile.ZipFile(path) as archive:
            return [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]
    except zipfile.BadZipFile as error:
        raise DatasetError(f"{path}: not a .npz (zip) archive ({error})") from error


def require_keys(path: Path, keys: list[str], required: Sequence[str]) -> None:
    absent = [key for key in required if key not in keys]
    if absent:
        raise DatasetError(
            f"{path}: missing arrays {absent}; it holds {sorted(keys)}, expected {list(required)}"
        )


def _read_npy_header(member: Any) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Shape, dtype and Fortran order of an open .npy stream, left positioned at the data."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
    else:
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
    return tuple(shape), dtype, fortran_order


def npz_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        return _read_npy_header(member)


def iter_npz_rows(path: Path, key: str, rows_per_read: int = 64) -> Iterator[np.ndarray]:
    """Rows of array `key` of an .npz, read from the zip stream a few at a time (bounded memory)."""
    shape, dtype, fortran_order = npz_header(path, key)
    if fortran_order or dtype.hasobject:
        with np.load(path, allow_pickle=False) as archive:
            yield from archive[key]
        return
    row_shape = shape[1:]
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        _read_npy_header(member)
        remaining = shape[0] if shape else 0
        while remaining > 0:
            count = min(rows_per_read, remaining)
            block = member.read(count * row_bytes)
            if len(block) != count * row_bytes:
                raise DatasetError(f"{path}: {key} is truncated; re-download the file")
            yield from np.frombuffer(block, dtype=dtype).reshape(count, *row_shape)  # (count, *row)
            remaining -= count


def load_npz_array(path: Path, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        return archive[key]


@dataclass(frozen=True)
class PreprocessedLayout:
    """What one preprocessed `.npz` format decides for itself."""

    format: str
    read_labels: Callable[[Path, str, np.ndarray], tuple[np.ndarray, int | None]]
    """(source, part, raw `y_<part>`) → (class ids (N,), the class count a one-hot width
    implies, or None)."""
    identify: Callable[
        [Path, dict[str, tuple[int, ...]], dict[str, np.ndarray], int | None, str | None],
        tuple[str, str, list[str]],
    ]
    """(source, `x_<part>` shapes, labels by part, class count from the file, requested
    benchmark) → (dataset, benchmark, the benchmarks valid for it); raises on a bad shape."""
    to_joints: Callable[[np.ndarray], np.ndarray]
    """One row of `x_<part>` → (T, M, 25, 3)."""


def integer_labels(source: Path, part: str, raw: np.ndarray) -> tuple[np.ndarray, int | None]:
    """`y_<part>` as (N,) or (N, 1) integer class ids."""
    return as_integer_labels(raw, str(source), f"y_{part}"), None


def plan_preprocessed_npz(request: ImportRequest, layout: PreprocessedLayout) -> ImportPlan:
    """The rows of `x_train` then `x_test`, streamed, trimmed, in file order."""
    source, format = request.source, layout.format
    keys = npz_keys(source)
    require_keys(source, keys, ("x_train", "y_train", "x_test", "y_test"))
    headers = {}
    for part in PARTITIONS:
        shape, dtype, _ = npz_header(source, f"x_{part}")
        if dtype.kind not in "fiu":
            raise DatasetError(
                f"{source}: x_{part} has dtype {dtype}, expected numeric coordinates"
            )
        headers[part] = shape
    labels_by_part: dict[str, np.ndarray] = {}
    class_count_from_file: int | None = None
    for part in PARTITIONS:
        labels, width = layout.read_labels(source, part, load_npz_array(source, f"y_{part}"))
        labels_by_part[part] = labels
        class_count_from_file = width if width is not None else class_count_from_file
        if len(labels) != headers[part][0]:
            raise DatasetError(
                f"{source}: x_{part} has {headers[part][0]} samples but y_{part} has {len(labels)}"
            )
    dataset, benchmark, valid = layout.identify(
        source, headers, labels_by_part, class_count_from_file, request.benchmark
    )
    if benchmark not in valid:
        raise DatasetError(
            f"{format}: benchmark {benchmark!r} does not fit {dataset}; use one of {', '.join(valid)}"
        )
    class_names = class_names_for(dataset, request.class_names_file)
    for part in PARTITIONS:
        check_labels(
            labels_by_part[part],
            len(class_names),
            str(source),
            f"y_{part}",
            "labels must be 0-based class ids",
        )
    info = DatasetInfo(dataset=dataset, class_names=class_names, source=format, benchmark=benchmark)

    def items() -> Iterator[SequenceRecord | SkippedItem]:
        for part in PARTITIONS:
            for index, row in enumerate(iter_npz_rows(source, f"x_{part}")):
                sample_id = f"{part}_{index:06d}"
                trimmed = trim_sequence(layout.to_joints(row))
                if trimmed is None:
                    yield SkippedItem(sample_id, "every coordinate is zero")
                    continue
                if not np.isfinite(trimmed).all():
                    yield SkippedItem(
                        sample_id, f"x_{part}[{index}] contains NaN or inf", malformed=True
                    )
                    continue
                yield SequenceRecord(sample_id, int(labels_by_part[part][index]), trimmed, part)

    total = sum(len(labels) for labels in labels_by_part.values())
    return ImportPlan(info=info, total=total, items=items())
