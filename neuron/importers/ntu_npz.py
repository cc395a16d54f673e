"""The `ntu-npz` importer.

The preprocessed CTR-GCN files (`NTU60_CS.npz` …): `x_train` (N, T, M*75) with
M*75 = bodies × 25 joints × 3, `y_train` one-hot (N, 60 or 120) or integer (N,), `x_test`,
`y_test` (with integer labels the dataset comes from `benchmark`, else it has 120 classes
when a label is >= 60). Trailing all-zero frames are trimmed and trailing all-zero bodies dropped (a
single-person sample is stored with 1 body); all-zero samples are skipped. Ids are
`train_000123` / `test_000045`; the benchmark defaults to `ntu60-xsub` / `ntu120-xsub`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuron.benchmarks import BENCHMARK_NAMES, BENCHMARKS
from neuron.classes import DATASET_CLASSES
from neuron.dataset import DatasetError
from neuron.importers.common import ImportPlan, ImportRequest
from neuron.importers.npz import PreprocessedLayout, integer_labels, plan_preprocessed_npz
from neuron.joints import NUM_NTU_JOINTS


def read_labels(source: Path, part: str, raw: np.ndarray) -> tuple[np.ndarray, int | None]:
    """One-hot (N, 60 or 120) labels, whose width names the dataset, or integer class ids."""
    if raw.ndim == 2 and raw.shape[1] > 1:
        if not np.isin(raw, (0, 1)).all() or not (raw.sum(axis=1) == 1).all():
            bad = int(
                np.flatnonzero(~((raw.sum(axis=1) == 1) & np.isin(raw, (0, 1)).all(axis=1)))[0]
            )
            raise DatasetError(
                f"{source}: y_{part}[{bad}] is not one-hot; expected exactly one 1 per row"
            )
        return raw.argmax(axis=1).astype(np.int64), raw.shape[1]
    return integer_labels(source, part, raw)


def identify(
    source: Path,
    headers: dict[str, tuple[int, ...]],
    labels_by_part: dict[str, np.ndarray],
    class_count_from_file: int | None,
    benchmark: str | None,
) -> tuple[str, str, list[str]]:
    """NTU-60 or NTU-120 from the one-hot width, the benchmark, or the largest label."""
    for part, shape in headers.items():
        body_width = NUM_NTU_JOINTS * 3
        if len(shape) != 3 or shape[2] % body_width or shape[2] < body_width or shape[1] < 1:
            raise DatasetError(
                f"{source}: x_{part} has shape {shape}, expected (N, T, bodies * 75) as in NTU60_CS.npz (N, 300, 150)"
            )
    if class_count_from_file is None and benchmark in BENCHMARKS:
        class_count_from_file = len(DATASET_CLASSES[BENCHMARKS[benchmark].dataset])
    elif class_count_from_file is None:
        largest = max(int(labels.max(initial=0)) for labels in labels_by_part.values())
        class_count_from_file = 120 if largest >= 60 else 60
    datasets = {60: "ntu60", 120: "ntu120"}
    if class_count_from_file not in datasets:
        raise DatasetError(
            f"{source}: y_train has {class_count_from_file} columns; NTU has 60 or 120 classes"
        )
    dataset = datasets[class_count_from_file]
    valid = [name for name in BENCHMARK_NAMES if BENCHMARKS[name].dataset == dataset]
    return dataset, benchmark or f"{dataset}-xsub", valid


def to_joints(row: np.ndarray) -> np.ndarray:
    """(T, M*75) → (T, M, 25, 3)."""
    frames, width = row.shape
    return row.reshape(frames, width // (NUM_NTU_JOINTS * 3), NUM_NTU_JOINTS, 3)  # (T, M, V, 3)


LAYOUT = PreprocessedLayout("ntu-npz", read_labels, identify, to_joints)


def plan(request: ImportRequest) -> ImportPlan:
    """The rows of `x_train` then `x_test` of an NTU `.npz`."""
    return plan_preprocessed_npz(request, LAYOUT)
