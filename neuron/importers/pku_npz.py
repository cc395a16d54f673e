"""The `pku-npz` importer.

PKU-MMD phase I: `x_train` (N, 3, T, 25, M), `y_train` (N,) or (N, 1) 0-based labels of the
51 actions, `x_test`, `y_test`; trimmed like `ntu-npz`; benchmark `pku-xsub` (or `pku-xview`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuron.benchmarks import SOURCE_PARTITIONED_BENCHMARKS
from neuron.dataset import DatasetError
from neuron.importers.common import ImportPlan, ImportRequest
from neuron.importers.npz import PreprocessedLayout, integer_labels, plan_preprocessed_npz
from neuron.joints import NUM_NTU_JOINTS


def identify(
    source: Path,
    headers: dict[str, tuple[int, ...]],
    labels_by_part: dict[str, np.ndarray],
    class_count_from_file: int | None,
    benchmark: str | None,
) -> tuple[str, str, list[str]]:
    """Always PKU-MMD phase I; the benchmark defaults to `pku-xsub`."""
    for part, shape in headers.items():
        if len(shape) != 5 or shape[1] != 3 or shape[3] != NUM_NTU_JOINTS or min(shape[2::2]) < 1:
            raise DatasetError(
                f"{source}: x_{part} has shape {shape}, expected (N, 3, T, 25, M) (PKU-MMD: (N, 3, 64, 25, 2))"
            )
    dataset = "pku_mmd"
    valid = [name for name, owner in SOURCE_PARTITIONED_BENCHMARKS.items() if owner == dataset]
    return dataset, benchmark or "pku-xsub", valid


def to_joints(row: np.ndarray) -> np.ndarray:
    """(3, T, 25, M) → (T, M, 25, 3)."""
    return row.transpose(1, 3, 2, 0)  # (C, T, V, M) -> (T, M, V, C)


LAYOUT = PreprocessedLayout("pku-npz", integer_labels, identify, to_joints)


def plan(request: ImportRequest) -> ImportPlan:
    """The rows of `x_train` then `x_test` of a PKU-MMD `.npz`."""
    return plan_preprocessed_npz(request, LAYOUT)
