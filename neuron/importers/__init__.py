"""Importers: public skeleton datasets in their original formats → one Arrow/Parquet dataset file.

`import_dataset(format, source, out, ...)` reads SOURCE, writes OUT through `DatasetWriter`
(atomically: OUT appears only when the whole import succeeded) and returns a summary dict.
`IMPORTERS` maps each format to its importer; one module per format says what it reads:

    ntu-raw         neuron.importers.ntu_raw    NTU RGB+D / NTU-120 `.skeleton` files
    ntu-npz         neuron.importers.ntu_npz    preprocessed CTR-GCN `.npz` (NTU60_CS.npz …)
    pku-npz         neuron.importers.pku_npz    preprocessed PKU-MMD phase I `.npz`
    nw-ucla         neuron.importers.nw_ucla    NW-UCLA `all_sqe` JSON files
    arrays          neuron.importers.arrays     a generic `.npz` or Parquet container
    synse-features  neuron.importers.synse      SynSE pooled features → a feature cache

Shared pieces: neuron.importers.common (records, checks, the writer loop, a process pool) and
neuron.importers.npz (streamed `.npz` reading and the preprocessed-`.npz` plan). Joint maps
from other layouts onto the NTU one live in neuron.joints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from neuron.dataset import DatasetError, SkeletonTable
from neuron.features import open_feature_table
from neuron.importers import arrays, ntu_npz, ntu_raw, nw_ucla, pku_npz, synse
from neuron.importers.common import Importer, ImportRequest, skeleton_importer

IMPORTERS: dict[str, Importer] = {
    "ntu-raw": skeleton_importer(ntu_raw.plan),
    "ntu-npz": skeleton_importer(ntu_npz.plan),
    "pku-npz": skeleton_importer(pku_npz.plan),
    "nw-ucla": skeleton_importer(nw_ucla.plan),
    "arrays": skeleton_importer(arrays.plan),
    "synse-features": synse.import_features,
}
"""Format name → importer (`neuron import FORMAT ...`)."""

IMPORT_FORMATS: tuple[str, ...] = tuple(IMPORTERS)


def import_dataset(
    format: str,
    source: str | Path,
    out: str | Path,
    *,
    benchmark: str | None = None,
    class_names_file: str | Path | None = None,
    joint_map_file: str | Path | None = None,
    test_subjects: tuple[int, ...] | None = None,
    progress: bool = True,
    strict: bool = False,
    workers: int = 0,
) -> dict[str, Any]:
    """Import SOURCE in `format` (one of IMPORT_FORMATS) into the dataset file OUT.

    OUT (`.arrow` or `.parquet`; `.arrow` for `synse-features`) appears only if the import
    succeeds. Malformed items are skipped and listed in the summary unless `strict`, which
    stops at the first one. `workers` processes parse raw `.skeleton` files (`ntu-raw`;
    0: one per CPU core, at most 8); the output is identical for any number. Returns a
    JSON-serialisable summary: format, source, output, dataset, benchmark, classes, sequences
    (written), train, test, skipped (list of {item, reason}), skipped_count, seconds,
    sequences_per_second.
    """
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    if format not in IMPORTERS:
        raise DatasetError(
            f"unknown import format {format!r}; valid formats: {', '.join(IMPORT_FORMATS)}"
        )
    if not source.exists():
        raise DatasetError(f"{source}: no such file or folder")
    if format != "arrays" and (joint_map_file is not None or test_subjects is not None):
        flag = "--joint-map" if joint_map_file is not None else "--test-subjects"
        raise DatasetError(f"{flag} is read by the arrays format only, not {format}")
    request = ImportRequest(
        format=format,
        source=source,
        out=out,
        benchmark=benchmark,
        class_names_file=class_names_file,
        joint_map_file=joint_map_file,
        test_subjects=test_subjects,
        progress=progress,
        strict=strict,
        workers=workers,
    )
    summary = IMPORTERS[format](request)
    seconds = time.perf_counter() - started
    return {
        "format": format,
        "source": str(source),
        "output": str(out),
        **summary,
        "seconds": seconds,
        "sequences_per_second": summary["sequences"] / max(seconds, 1e-9),
    }


def dataset_summary(path: str | Path) -> dict[str, Any]:
    """Summary of a dataset file (`SkeletonTable.summary`) or of an imported feature cache."""
    path = Path(path)
    if path.suffix == ".arrow" and path.is_file():
        try:
            metadata = ipc.open_file(pa.memory_map(str(path), "r")).schema.metadata or {}
        except (pa.ArrowInvalid, OSError) as error:
            raise DatasetError(
                f"{path}: not a readable Arrow file ({error}); re-import it"
            ) from error
        if any(key.startswith(b"neuron.features.") for key in metadata):
            table = open_feature_table(path)
            return {
                "path": str(path),
                "kind": "features",
                "dataset": table.info.get("dataset", "unknown"),
                "benchmark": table.info.get("benchmark", ""),
                "source": table.info.get("source", ""),
                "rows": len(table),
                "classes": len(table.info.get("class_names", [])),
                "subsets": {
                    str(k): int(v)
                    for k, v in zip(*np.unique(table.subsets, return_counts=True), strict=True)
                },
                "channels": table.channels,
                "joints": table.joints,
                "frames": table.frames,
            }
    skeletons = SkeletonTable(path, validate=False)
    problems = [problem.describe() for problem in skeletons.problems]
    return {"kind": "skeletons", **skeletons.summary(), "problems": problems or "none"}
