"""The `synse-features` importer.

A folder of SynSE-style pooled features: `train.npy` (N, D), `train_label.npy`, `ztest.npy`,
`z_label.npy`, `gtest.npy`, `g_label.npy`. Written as a feature cache
(`neuron.features.write_feature_table`, OUT must end in `.arrow`) with subsets `train`,
`test_unseen` (ztest) and `test_all` (gtest); each D-vector is stored as C = D, V = 1,
T' = 1. Class names come from `class_names_file` or the `benchmark`'s dataset.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from neuron.benchmarks import benchmark_dataset
from neuron.classes import DATASET_CLASSES
from neuron.dataset import DatasetError
from neuron.features import write_feature_table
from neuron.importers.common import ImportRequest, as_integer_labels, check_labels, read_class_names

SYNSE_FILES: dict[str, tuple[str, str]] = {
    "train": ("train.npy", "train_label.npy"),
    "test_unseen": ("ztest.npy", "z_label.npy"),
    "test_all": ("gtest.npy", "g_label.npy"),
}
"""Feature-cache subset → (features file, labels file) of a SynSE feature folder."""


def load_synse_features(folder: str | Path) -> dict[str, np.ndarray]:
    """The six SynSE arrays, validated: `{stem: array}` with features (N, D) float32 and labels (N,) int64."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: not a folder; SOURCE must hold {[n for pair in SYNSE_FILES.values() for n in pair]}"
        )
    arrays: dict[str, np.ndarray] = {}
    width: int | None = None
    for features_name, labels_name in SYNSE_FILES.values():
        for name in (features_name, labels_name):
            if not (folder / name).is_file():
                raise DatasetError(
                    f"{folder}: {name} is missing; a SynSE feature folder holds {', '.join(n for p in SYNSE_FILES.values() for n in p)}"
                )
        try:
            features = np.load(folder / features_name, allow_pickle=False)
            labels = np.load(folder / labels_name, allow_pickle=False)
        except ValueError as error:
            raise DatasetError(
                f"{folder}: {features_name} or {labels_name} is not a plain .npy array ({error})"
            ) from error
        if features.ndim != 2 or features.shape[0] < 1:
            raise DatasetError(
                f"{folder / features_name}: shape {features.shape}, expected (N, D) pooled features"
            )
        width = width or features.shape[1]
        if features.shape[1] != width:
            raise DatasetError(
                f"{folder / features_name}: feature width {features.shape[1]}, train.npy has {width}"
            )
        if not np.isfinite(features).all():
            raise DatasetError(f"{folder / features_name}: contains NaN or inf")
        labels = as_integer_labels(labels, str(folder / labels_name), "labels")
        if len(labels) != len(features):
            raise DatasetError(
                f"{folder / labels_name}: {len(labels)} labels for {len(features)} rows of {features_name}"
            )
        arrays[Path(features_name).stem] = features.astype(np.float32, copy=False)
        arrays[Path(labels_name).stem] = labels
    return arrays


def import_features(request: ImportRequest) -> dict[str, Any]:
    """Write the SynSE arrays of SOURCE as a feature cache at OUT."""
    source, out, benchmark = request.source, request.out, request.benchmark
    class_names_file = request.class_names_file
    if out.suffix != ".arrow":
        raise DatasetError(
            f"{out}: a feature cache is an Arrow file; the output must end in .arrow"
        )
    if class_names_file is not None:
        class_names = read_class_names(class_names_file)
        dataset = benchmark_dataset(benchmark) if benchmark else "custom"
    elif benchmark is not None:
        dataset = benchmark_dataset(benchmark)
        class_names = DATASET_CLASSES[dataset]
    else:
        raise DatasetError(
            "synse-features: give --benchmark (e.g. ntu60-xsub) or --class-names FILE to name the classes"
        )
    arrays = load_synse_features(source)
    features, labels, subsets = [], [], []
    for subset, (features_name, labels_name) in SYNSE_FILES.items():
        subset_labels = arrays[Path(labels_name).stem]
        check_labels(
            subset_labels,
            len(class_names),
            str(source / labels_name),
            "labels",
            f"{len(class_names)} classes",
        )
        features.append(arrays[Path(features_name).stem])
        labels.append(subset_labels)
        subsets.extend([subset] * len(subset_labels))
    pooled = np.concatenate(features)[:, :, None]  # (N, D) -> (N, D, 1): C = D, V = T' = 1
    unseen = sorted(int(c) for c in np.unique(arrays["z_label"]))
    info = {
        "source": "synse-features",
        "dataset": dataset,
        "benchmark": benchmark or "custom",
        "class_names": list(class_names),
        "unseen_classes": unseen,
    }
    write_feature_table(
        out,
        joint_features=pooled,
        frame_features=pooled,
        labels=np.concatenate(labels),
        subsets=np.asarray(subsets),
        views=np.zeros(len(subsets), dtype=np.int16),
        info=info,
    )
    return {"dataset": dataset, "benchmark": info["benchmark"], "classes": len(class_names), "sequences": len(subsets),
            "subsets": dict(Counter(subsets)), "unseen_classes": unseen, "skipped": [], "skipped_count": 0}  # fmt: skip
