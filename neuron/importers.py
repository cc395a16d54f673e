"""Importers: public skeleton datasets in their original formats → one Arrow/Parquet dataset file.

`import_dataset(format, source, out, ...)` reads SOURCE, writes OUT through `DatasetWriter`
(atomically: OUT appears only when the whole import succeeded) and returns a summary dict.

Formats (`IMPORT_FORMATS`):

`ntu-raw`
    A folder (searched recursively) of NTU RGB+D / NTU-120 `.skeleton` files, Kinect v2 text
    with LF or CRLF line endings. `benchmark` is required (`ntu60-xsub`, `ntu60-xview`,
    `ntu120-xsub`, `ntu120-xset`) and names the dataset. Samples named in
    `NTU_RGBD_samples_with_missing_skeletons.txt` / `NTU_RGBD120_samples_with_missing_skeletons.txt`
    found anywhere in SOURCE are skipped, as are files with no body in any frame and, under an
    NTU-60 benchmark, samples outside NTU-60 (setup > 17 or action > 60). Malformed files are
    skipped and reported with file name and line number (`strict=True` stops instead).
    Bodies are tracked by their Kinect body id; at most 2 are kept, chosen by `select_bodies`:
    bodies tracked in more than 10 frames first (CTR-GCN's denoising drops shorter ones), then
    the larger motion energy (sum over joints and axes of the position variance over the
    tracked frames, as in CTR-GCN `get_raw_denoised_data`), then more tracked frames, then
    earlier appearance. The kept bodies are stored in that order. CTR-GCN's spread-based
    denoising and merging of non-overlapping body ids are not done. Frames where a kept body
    is not tracked are zeros; every frame is kept. label = action - 1, subject = performer P,
    view = camera C, setup = S.
`ntu-npz`
    The preprocessed CTR-GCN files (`NTU60_CS.npz` …): `x_train` (N, T, M*75) with
    M*75 = bodies × 25 joints × 3, `y_train` one-hot (N, 60 or 120) or integer (N,), `x_test`,
    `y_test` (with integer labels the dataset comes from `benchmark`, else it has 120 classes
    when a label is >= 60). Trailing all-zero frames are trimmed and trailing all-zero bodies dropped (a
    single-person sample is stored with 1 body); all-zero samples are skipped. Ids are
    `train_000123` / `test_000045`; the benchmark defaults to `ntu60-xsub` / `ntu120-xsub`.
`pku-npz`
    PKU-MMD phase I: `x_train` (N, 3, T, 25, M), `y_train` (N,) or (N, 1) 0-based labels of the
    51 actions, `x_test`, `y_test`; trimmed like `ntu-npz`; benchmark `pku-xsub` (or `pku-xview`).
`nw-ucla`
    A folder (searched recursively) of NW-UCLA `all_sqe` JSON files
    `{"file_name": "aAA_sSS_eEE_vVV", "skeletons": [T][20][3], "label": 1..10}`. The Kinect v1
    joints are mapped to the NTU layout with `neuron.joints.KINECT_V1_TO_NTU` and
    `NTU_FROM_KINECT_V1_DERIVED`; subject = s, view = v, setup = e (the repetition);
    benchmark `nwucla-xview`; label = label - 1.
`arrays`
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
`synse-features`
    A folder of SynSE-style pooled features: `train.npy` (N, D), `train_label.npy`, `ztest.npy`,
    `z_label.npy`, `gtest.npy`, `g_label.npy`. Written as a feature cache
    (`neuron.features.write_feature_table`, OUT must end in `.arrow`) with subsets `train`,
    `test_unseen` (ztest) and `test_all` (gtest); each D-vector is stored as C = D, V = 1,
    T' = 1. Class names come from `class_names_file` or the `benchmark`'s dataset.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import multiprocessing
import os
import re
import sys
import time
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from tqdm import tqdm

from neuron.benchmarks import (
    BENCHMARK_NAMES,
    BENCHMARKS,
    SOURCE_PARTITIONED_BENCHMARKS,
    benchmark_dataset,
    partition_of,
)
from neuron.classes import DATASET_CLASSES
from neuron.dataset import PARTITIONS, DatasetError, DatasetInfo, DatasetWriter, SkeletonTable
from neuron.features import open_feature_table, write_feature_table
from neuron.joints import (
    KINECT_V1_TO_NTU,
    NTU_FROM_KINECT_V1_DERIVED,
    NTU_PARENTS,
    NUM_NTU_JOINTS,
)

IMPORT_FORMATS: tuple[str, ...] = (
    "ntu-raw",
    "ntu-npz",
    "pku-npz",
    "nw-ucla",
    "arrays",
    "synse-features",
)

NTU_MISSING_LISTS: tuple[str, ...] = (
    "NTU_RGBD_samples_with_missing_skeletons.txt",
    "NTU_RGBD120_samples_with_missing_skeletons.txt",
)
"""Official lists of samples to ignore; looked for anywhere inside an `ntu-raw` SOURCE."""

NTU_SAMPLE_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
NW_UCLA_SAMPLE_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)_v(\d+)")
NTU60_LAST_SETUP = 17
NTU_JOINT_FIELDS = 12
NTU_BODY_FIELDS = 10
SHORT_BODY_FRAMES = 10
"""A body tracked in at most this many frames ranks after longer ones (CTR-GCN denoising)."""


# --------------------------------------------------------------------------------------------
# Records shared by every skeleton format


@dataclass(frozen=True)
class SequenceRecord:
    """One sequence ready for `DatasetWriter.add`; joints (T, M, 25, 3) in metres."""

    sample_id: str
    label: int
    joints: np.ndarray
    partition: str
    subject: int = -1
    view: int = -1
    setup: int = -1


@dataclass(frozen=True)
class SkippedItem:
    """A source item that was not imported; `malformed` items stop a strict import."""

    item: str
    reason: str
    malformed: bool = False


@dataclass
class _ImportPlan:
    info: DatasetInfo
    total: int
    items: Iterator[SequenceRecord | SkippedItem]


# --------------------------------------------------------------------------------------------
# Small helpers


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file (one per line, blank lines ignored) or a JSON list of strings."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"{path}: no such class names file (text, one name per line, or a JSON list)"
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{path}:{error.lineno}: not valid JSON ({error.msg}); expected a list of class names"
            ) from error
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DatasetError(
                f"{path}: expected a JSON list of strings, got {type(names).__name__}"
            )
        names = [n.strip() for n in names]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path}: no class names; write one name per line")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DatasetError(
            f"{path}: duplicate class names {duplicates}; every class needs a distinct name"
        )
    return tuple(names)


def _class_names_for(dataset: str, class_names_file: str | Path | None) -> tuple[str, ...]:
    expected = DATASET_CLASSES[dataset]
    if class_names_file is None:
        return expected
    names = read_class_names(class_names_file)
    if len(names) != len(expected):
        raise DatasetError(
            f"{class_names_file}: {len(names)} class names, but {dataset} has {len(expected)} classes; "
            "give one name per class or leave class_names_file out to use the built-in names"
        )
    return names


def _check_labels(labels: np.ndarray, num_classes: int, where: str, field: str, hint: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise DatasetError(
            f"{where}: {field}[{bad}] = {int(labels[bad])} is outside 0..{num_classes - 1} "
            f"({num_classes} classes); {hint}"
        )


def _as_integer_labels(values: np.ndarray, where: str, field: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]  # (N, 1) -> (N,)
    if values.ndim != 1:
        raise DatasetError(f"{where}: {field} has shape {values.shape}, expected (N,) class ids")
    if not np.issubdtype(values.dtype, np.number) or not np.all(np.equal(np.mod(values, 1), 0)):
        raise DatasetError(
            f"{where}: {field} must hold integer class ids, got dtype {values.dtype}"
        )
    return values.astype(np.int64)


def _trim_sequence(joints: np.ndarray) -> np.ndarray | None:
    """Drop trailing all-zero frames and trailing all-zero bodies (keeping body 0); None if all zero."""
    nonzero = joints != 0
    frames = np.flatnonzero(nonzero.any(axis=(1, 2, 3)))
    if frames.size == 0:
        return None
    bodies = np.flatnonzero(nonzero.any(axis=(0, 2, 3)))
    return joints[: frames[-1] + 1, : max(int(bodies[-1]) + 1, 1)]


def _list_files(source: Path, pattern: str, what: str) -> list[Path]:
    if not source.is_dir():
        raise DatasetError(
            f"{source}: not a folder; SOURCE must be the folder that holds the {what}"
        )
    files = sorted(source.rglob(pattern), key=lambda p: (p.name, str(p)))
    if not files:
        raise DatasetError(
            f"{source}: no {pattern} files found (searched recursively); is this the {what} folder?"
        )
    return files


# --------------------------------------------------------------------------------------------
# Joint layout mapping


def ntu_joint_weights(
    source_of_ntu_joint: Sequence[Sequence[int]], num_source_joints: int
) -> np.ndarray:
    """(25, V_src) float32 averaging weights: NTU joint j is the mean of its listed source joints."""
    weights = np.zeros((NUM_NTU_JOINTS, num_source_joints), dtype=np.float32)
    for ntu_joint, sources in enumerate(source_of_ntu_joint):
        for source in sources:
            weights[ntu_joint, source] += 1.0 / len(sources)
    return weights


def _nearest_mapped_joint(ntu_joint: int, mapped: set[int]) -> int:
    ancestor = NTU_PARENTS[ntu_joint]
    while ancestor >= 0:
        if ancestor in mapped:
            return ancestor
        ancestor = NTU_PARENTS[ancestor]
    neighbours: dict[int, list[int]] = {j: [] for j in range(NUM_NTU_JOINTS)}
    for child, parent in enumerate(NTU_PARENTS):
        if parent >= 0:
            neighbours[child].append(parent)
            neighbours[parent].append(child)
    distance = {ntu_joint: 0}
    queue = deque([ntu_joint])
    while queue:
        joint = queue.popleft()
        for other in neighbours[joint]:
            if other not in distance:
                distance[other] = distance[joint] + 1
                queue.append(other)
    return min(mapped, key=lambda j: (distance[j], j))


def joint_weights_from_map(
    ntu_index_of_source: Sequence[int | None], where: str = "joint map"
) -> np.ndarray:
    """(25, V_src) weights from one NTU index (or None) per source joint; unmapped NTU joints
    copy their nearest mapped ancestor (see the module docstring)."""
    sources: dict[int, int] = {}
    for source, ntu_joint in enumerate(ntu_index_of_source):
        if ntu_joint is None:
            continue
        if (
            isinstance(ntu_joint, bool)
            or not isinstance(ntu_joint, int)
            or not 0 <= ntu_joint < NUM_NTU_JOINTS
        ):
            raise DatasetError(
                f"{where}: entry {source} is {ntu_joint!r}; expected an NTU joint index 0..{NUM_NTU_JOINTS - 1} or null"
            )
        if ntu_joint in sources:
            raise DatasetError(
                f"{where}: source joints {sources[ntu_joint]} and {source} both map to NTU joint {ntu_joint}; "
                "map each NTU joint at most once"
            )
        sources[ntu_joint] = source
    if not sources:
        raise DatasetError(f"{where}: no source joint is mapped to an NTU joint")
    mapped = set(sources)
    source_of_ntu_joint = [
        (sources[j] if j in mapped else sources[_nearest_mapped_joint(j, mapped)],)
        for j in range(NUM_NTU_JOINTS)
    ]
    return ntu_joint_weights(source_of_ntu_joint, len(ntu_index_of_source))


def kinect_v1_joint_weights() -> np.ndarray:
    """(25, 20) weights of the NW-UCLA Kinect v1 → NTU mapping (`neuron.joints`)."""
    source_of_ntu_joint: list[tuple[int, ...]] = [() for _ in range(NUM_NTU_JOINTS)]
    for source, ntu_joint in enumerate(KINECT_V1_TO_NTU):
        source_of_ntu_joint[ntu_joint] = (source,)
    for ntu_joint, sources in NTU_FROM_KINECT_V1_DERIVED.items():
        source_of_ntu_joint[ntu_joint] = sources
    return ntu_joint_weights(source_of_ntu_joint, len(KINECT_V1_TO_NTU))


def map_joints(joints: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(T, M, V_src, 3) source joints → (T, M, 25, 3) NTU joints with (25, V_src) weights."""
    return np.einsum(
        "jv,tmvc->tmjc", weights, joints.astype(np.float32, copy=False)
    )  # (T, M, 25, 3)


def read_joint_map(path: str | Path | None, num_source_joints: int, where: str) -> np.ndarray:
    """Weights for `arrays`: from `joint_map_file`, or the identity when there are 25 source joints."""
    if path is None:
        if num_source_joints != NUM_NTU_JOINTS:
            raise DatasetError(
                f"{where}: {num_source_joints} joints per body, not the 25 of the NTU layout; give "
                'joint_map_file, a JSON list with one NTU joint index (or null) per source joint, or {"layout": "kinect_v1"}'
            )
        return np.eye(NUM_NTU_JOINTS, dtype=np.float32)
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such joint map file")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
    if isinstance(spec, dict):
        layouts = {"ntu25": NUM_NTU_JOINTS, "kinect_v1": len(KINECT_V1_TO_NTU)}
        layout = spec.get("layout")
        if layout not in layouts:
            raise DatasetError(
                f"{path}: layout {layout!r}; expected one of {sorted(layouts)} or a JSON list"
            )
        if num_source_joints != layouts[layout]:
            raise DatasetError(
                f"{path}: layout {layout!r} has {layouts[layout]} joints but {where} has {num_source_joints} per body"
            )
        return (
            np.eye(NUM_NTU_JOINTS, dtype=np.float32)
            if layout == "ntu25"
            else kinect_v1_joint_weights()
        )
    if not isinstance(spec, list):
        raise DatasetError(
            f'{path}: expected a JSON list of NTU indices or {{"layout": ...}}, got {type(spec).__name__}'
        )
    if len(spec) != num_source_joints:
        raise DatasetError(
            f"{path}: {len(spec)} entries but {where} has {num_source_joints} joints per body; give one entry per source joint"
        )
    return joint_weights_from_map(spec, str(path))


# --------------------------------------------------------------------------------------------
# NTU RGB+D .skeleton files


@dataclass(frozen=True)
class NtuSkeleton:
    """A parsed `.skeleton` file: every tracked body, before selection."""

    joints: np.ndarray
    """(T, B, 25, 3) float32 camera-space metres, zeros where body b is not tracked."""
    tracked: np.ndarray
    """(T, B) bool."""
    body_ids: tuple[str, ...]


def _malformed(path: Path, line: int, expected: str, found: str) -> DatasetError:
    return DatasetError(
        f"{path.name}:{line}: expected {expected}, found {found!r}; the file is malformed "
        "(re-extract it from the dataset archive or remove it)"
    )


def read_ntu_skeleton(path: str | Path) -> NtuSkeleton:
    """Parse an NTU RGB+D `.skeleton` file (format in ../shared/data/README.md); LF or CRLF.

    Raises DatasetError naming the file and the 1-based line of the first malformed field.
    """
    path = Path(path)
    try:
        lines = path.read_bytes().decode("ascii").splitlines()
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{path.name}: byte {error.start} is not ASCII text; this is not a .skeleton file"
        ) from error
    cursor = 0

    def integer(expected: str) -> int:
        nonlocal cursor
        if cursor >= len(lines):
            raise _malformed(path, cursor + 1, expected, "end of file")
        text = lines[cursor].strip()
        if not text.isdigit():
            raise _malformed(path, cursor + 1, expected, lines[cursor])
        cursor += 1
        return int(text)

    frame_count = integer("the frame count")
    per_frame: list[list[tuple[int, np.ndarray]]] = []
    track_of_key: dict[tuple[str, int], int] = {}
    for _ in range(frame_count):
        bodies_in_frame = integer("the body count of a frame")
        frame: list[tuple[int, np.ndarray]] = []
        seen_in_frame: Counter[str] = Counter()
        for _ in range(bodies_in_frame):
            if cursor >= len(lines):
                raise _malformed(
                    path, cursor + 1, f"a body line of {NTU_BODY_FIELDS} fields", "end of file"
                )
            body_fields = lines[cursor].split()
            if len(body_fields) != NTU_BODY_FIELDS:
                raise _malformed(
                    path, cursor + 1, f"a body line of {NTU_BODY_FIELDS} fields", lines[cursor]
                )
            body_id = body_fields[0]
            cursor += 1
            joint_count = integer("the joint count (25)")
            if joint_count != NUM_NTU_JOINTS:
                raise _malformed(path, cursor, f"{NUM_NTU_JOINTS} joints", lines[cursor - 1])
            block = lines[cursor : cursor + NUM_NTU_JOINTS]
            values = " ".join(block).split()
            try:
                if len(values) != NUM_NTU_JOINTS * NTU_JOINT_FIELDS:
                    raise ValueError
                table = np.array(values, dtype=np.float64).reshape(
                    NUM_NTU_JOINTS, NTU_JOINT_FIELDS
                )  # (25, 12)
            except ValueError:
                for offset in range(NUM_NTU_JOINTS):
                    if cursor + offset >= len(lines):
                        raise _malformed(
                            path, cursor + offset + 1, "a joint line", "end of file"
                        ) from None
                    fields = lines[cursor + offset].split()
                    try:
                        valid = len(fields) == NTU_JOINT_FIELDS and all(
                            np.isfinite(float(f)) for f in fields
                        )
                    except ValueError:
                        valid = False
                    if not valid:
                        raise _malformed(
                            path,
                            cursor + offset + 1,
                            f"a joint line of {NTU_JOINT_FIELDS} numbers",
                            lines[cursor + offset],
                        ) from None
                raise
            cursor += NUM_NTU_JOINTS
            key = (body_id, seen_in_frame[body_id])
            seen_in_frame[body_id] += 1
            track = track_of_key.setdefault(key, len(track_of_key))
            frame.append((track, table[:, :3].astype(np.float32)))
        per_frame.append(frame)
    for extra in range(cursor, len(lines)):
        if lines[extra].strip():
            raise _malformed(
                path, extra + 1, f"the end of the file after {frame_count} frames", lines[extra]
            )
    joints = np.zeros((frame_count, len(track_of_key), NUM_NTU_JOINTS, 3), dtype=np.float32)
    tracked = np.zeros((frame_count, len(track_of_key)), dtype=bool)
    for frame_index, frame in enumerate(per_frame):
        for track, coordinates in frame:
            joints[frame_index, track] = coordinates
            tracked[frame_index, track] = True
    body_ids = tuple(
        body_id if index == 0 else f"{body_id}#{index}" for body_id, index in track_of_key
    )
    return NtuSkeleton(joints=joints, tracked=tracked, body_ids=body_ids)


def select_bodies(skeleton: NtuSkeleton, max_bodies: int = 2) -> np.ndarray:
    """(T, min(B, max_bodies), 25, 3): the bodies ranked first (see the module docstring)."""
    ranking = []
    for body in range(skeleton.joints.shape[1]):
        frames = np.flatnonzero(skeleton.tracked[:, body])
        if frames.size == 0:
            continue
        motion = float(skeleton.joints[frames, body].var(axis=0).sum()) if frames.size > 1 else 0.0
        ranking.append(
            ((frames.size > SHORT_BODY_FRAMES, motion, frames.size, -int(frames[0])), body)
        )
    ranking.sort(key=lambda entry: entry[0], reverse=True)
    kept = [body for _, body in ranking[:max_bodies]]
    return skeleton.joints[:, kept]


def _read_missing_lists(source: Path) -> dict[str, str]:
    missing: dict[str, str] = {}
    for name in NTU_MISSING_LISTS:
        for path in sorted(source.rglob(name)):
            for sample in NTU_SAMPLE_NAME.findall(
                path.read_text(encoding="utf-8", errors="replace")
            ):
                missing.setdefault("S{}C{}P{}R{}A{}".format(*sample), name)
    return missing


def _plan_ntu_raw(
    source: Path, benchmark: str | None, class_names_file: str | Path | None, workers: int = 1
) -> _ImportPlan:
    ntu_benchmarks = [name for name in BENCHMARK_NAMES if name.startswith("ntu")]
    if benchmark not in ntu_benchmarks:
        raise DatasetError(
            f"ntu-raw: benchmark {benchmark!r}; the raw NTU import needs one of {', '.join(ntu_benchmarks)} "
            "(it decides the dataset, NTU-60 or NTU-120, and the train/test partition)"
        )
    dataset = benchmark_dataset(benchmark)
    class_names = _class_names_for(dataset, class_names_file)
    files = _list_files(source, "*.skeleton", "NTU RGB+D .skeleton")
    missing = _read_missing_lists(source)
    info = DatasetInfo(
        dataset=dataset, class_names=class_names, source="ntu-raw", benchmark=benchmark
    )

    def decisions() -> Iterator[SkippedItem | tuple[Path, dict[str, Any]]]:
        """File order: a skip decided from the name alone, or a file to read with its fields."""
        first_path: dict[str, Path] = {}
        for path in files:
            match = NTU_SAMPLE_NAME.fullmatch(path.stem)
            if match is None:
                yield SkippedItem(path.name, "file name does not follow SsssCcccPpppRrrrAaaa")
                continue
            setup, camera, performer, _, action = (int(group) for group in match.groups())
            if path.stem in first_path:
                yield SkippedItem(path.name, f"duplicate of {first_path[path.stem]}")
                continue
            first_path[path.stem] = path
            if path.stem in missing:
                yield SkippedItem(path.name, f"listed in {missing[path.stem]}")
                continue
            if dataset == "ntu60" and (setup > NTU60_LAST_SETUP or action > len(class_names)):
                yield SkippedItem(
                    path.name,
                    f"not part of NTU RGB+D 60 (benchmark {benchmark}); use an ntu120 benchmark",
                )
                continue
            if action > len(class_names):
                raise DatasetError(
                    f"{path.name}: action A{action:03d} but {dataset} has {len(class_names)} classes"
                )
            yield (
                path,
                {
                    "sample_id": path.stem,
                    "label": action - 1,
                    "partition": partition_of(benchmark, performer, camera, setup),
                    "subject": performer,
                    "view": camera,
                    "setup": setup,
                },
            )

    def items() -> Iterator[SequenceRecord | SkippedItem]:
        planned = list(decisions())
        to_read = [entry[0] for entry in planned if not isinstance(entry, SkippedItem)]
        read = ordered_map(_read_ntu_sequence, to_read, workers)
        for entry in planned:
            if isinstance(entry, SkippedItem):
                yield entry
                continue
            path, fields = entry
            joints = next(read)
            if isinstance(joints, SkippedItem):
                yield joints
            else:
                yield SequenceRecord(joints=joints, **fields)

    return _ImportPlan(info=info, total=len(files), items=items())


def _read_ntu_sequence(path: Path) -> np.ndarray | SkippedItem:
    """The kept bodies of one `.skeleton` file (T, M<=2, 25, 3), or why it is skipped."""
    try:
        skeleton = read_ntu_skeleton(path)
    except DatasetError as error:
        return SkippedItem(path.name, str(error), malformed=True)
    if not skeleton.tracked.any():
        return SkippedItem(path.name, "no body in any frame")
    return select_bodies(skeleton, max_bodies=2)


def ordered_map(
    function: Callable[[Any], Any],
    items: Sequence[Any],
    workers: int,
    ahead: int = 8,
    min_items: int = 64,
) -> Iterator[Any]:
    """`map(function, items)` on `workers` processes, in order, lazily: at most `ahead` chunks
    per worker are in flight, so a slow consumer never holds the whole dataset in memory.
    `workers <= 1`, or fewer than `min_items` items (not worth starting processes), maps in
    this process. `function` must be a module-level function (it is pickled)."""
    if workers <= 1 or len(items) < min_items:
        yield from map(function, items)
        return
    chunk = max(1, min(64, len(items) // (workers * ahead) or 1))
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    # fork: the workers start in milliseconds and inherit `function`; spawn elsewhere.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending: deque[concurrent.futures.Future] = deque()
        upcoming = iter(chunks)
        for part in itertools.islice(upcoming, workers * ahead):
            pending.append(pool.submit(_map_chunk, function, part))
        while pending:
            results = pending.popleft().result()
            for part in itertools.islice(upcoming, 1):
                pending.append(pool.submit(_map_chunk, function, part))
            yield from results


def _map_chunk(function: Callable[[Any], Any], part: Sequence[Any]) -> list[Any]:
    return [function(item) for item in part]


# --------------------------------------------------------------------------------------------
# .npz containers (ntu-npz, pku-npz): arrays are streamed row by row, never loaded whole


def _npz_keys(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; SOURCE must be the .npz file")
    try:
        with zipfile.ZipFile(path) as archive:
            return [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]
    except zipfile.BadZipFile as error:
        raise DatasetError(f"{path}: not a .npz (zip) archive ({error})") from error


def _require_keys(path: Path, keys: list[str], required: Sequence[str]) -> None:
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


def _npz_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        return _read_npy_header(member)


def _iter_npz_rows(path: Path, key: str, rows_per_read: int = 64) -> Iterator[np.ndarray]:
    """Rows of array `key` of an .npz, read from the zip stream a few at a time (bounded memory)."""
    shape, dtype, fortran_order = _npz_header(path, key)
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


def _load_npz_array(path: Path, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        return archive[key]


def _plan_preprocessed_npz(
    format: str, source: Path, benchmark: str | None, class_names_file: str | Path | None
) -> _ImportPlan:
    keys = _npz_keys(source)
    _require_keys(source, keys, ("x_train", "y_train", "x_test", "y_test"))
    headers = {}
    for part in PARTITIONS:
        shape, dtype, _ = _npz_header(source, f"x_{part}")
        if dtype.kind not in "fiu":
            raise DatasetError(
                f"{source}: x_{part} has dtype {dtype}, expected numeric coordinates"
            )
        headers[part] = shape
    labels_by_part: dict[str, np.ndarray] = {}
    class_count_from_file: int | None = None
    for part in PARTITIONS:
        raw = _load_npz_array(source, f"y_{part}")
        if format == "ntu-npz" and raw.ndim == 2 and raw.shape[1] > 1:
            if not np.isin(raw, (0, 1)).all() or not (raw.sum(axis=1) == 1).all():
                bad = int(
                    np.flatnonzero(~((raw.sum(axis=1) == 1) & np.isin(raw, (0, 1)).all(axis=1)))[0]
                )
                raise DatasetError(
                    f"{source}: y_{part}[{bad}] is not one-hot; expected exactly one 1 per row"
                )
            class_count_from_file = raw.shape[1]
            labels_by_part[part] = raw.argmax(axis=1).astype(np.int64)
        else:
            labels_by_part[part] = _as_integer_labels(raw, str(source), f"y_{part}")
        if len(labels_by_part[part]) != headers[part][0]:
            raise DatasetError(
                f"{source}: x_{part} has {headers[part][0]} samples but y_{part} has {len(labels_by_part[part])}"
            )

    if format == "ntu-npz":
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
        benchmark = benchmark or f"{dataset}-xsub"
        valid = [name for name in BENCHMARK_NAMES if BENCHMARKS[name].dataset == dataset]
    else:
        for part, shape in headers.items():
            if (
                len(shape) != 5
                or shape[1] != 3
                or shape[3] != NUM_NTU_JOINTS
                or min(shape[2::2]) < 1
            ):
                raise DatasetError(
                    f"{source}: x_{part} has shape {shape}, expected (N, 3, T, 25, M) (PKU-MMD: (N, 3, 64, 25, 2))"
                )
        dataset = "pku_mmd"
        benchmark = benchmark or "pku-xsub"
        valid = [name for name, owner in SOURCE_PARTITIONED_BENCHMARKS.items() if owner == dataset]
    if benchmark not in valid:
        raise DatasetError(
            f"{format}: benchmark {benchmark!r} does not fit {dataset}; use one of {', '.join(valid)}"
        )
    class_names = _class_names_for(dataset, class_names_file)
    for part in PARTITIONS:
        _check_labels(
            labels_by_part[part],
            len(class_names),
            str(source),
            f"y_{part}",
            "labels must be 0-based class ids",
        )
    info = DatasetInfo(dataset=dataset, class_names=class_names, source=format, benchmark=benchmark)

    def items() -> Iterator[SequenceRecord | SkippedItem]:
        for part in PARTITIONS:
            for index, row in enumerate(_iter_npz_rows(source, f"x_{part}")):
                if format == "ntu-npz":
                    frames, width = row.shape
                    joints = row.reshape(
                        frames, width // (NUM_NTU_JOINTS * 3), NUM_NTU_JOINTS, 3
                    )  # (T, M, V, 3)
                else:
                    joints = row.transpose(1, 3, 2, 0)  # (C, T, V, M) -> (T, M, V, C)
                sample_id = f"{part}_{index:06d}"
                trimmed = _trim_sequence(joints)
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
    return _ImportPlan(info=info, total=total, items=items())


# --------------------------------------------------------------------------------------------
# NW-UCLA JSON


def _plan_nw_ucla(
    source: Path, benchmark: str | None, class_names_file: str | Path | None
) -> _ImportPlan:
    benchmark = benchmark or "nwucla-xview"
    if benchmark != "nwucla-xview":
        raise DatasetError(
            f"nw-ucla: benchmark {benchmark!r}; NW-UCLA has one benchmark, nwucla-xview"
        )
    class_names = _class_names_for("nw_ucla", class_names_file)
    files = _list_files(source, "*.json", "NW-UCLA all_sqe JSON")
    weights = kinect_v1_joint_weights()
    source_joints = len(KINECT_V1_TO_NTU)
    info = DatasetInfo(
        dataset="nw_ucla", class_names=class_names, source="nw-ucla", benchmark=benchmark
    )

    def items() -> Iterator[SequenceRecord | SkippedItem]:
        for path in files:
            match = NW_UCLA_SAMPLE_NAME.fullmatch(path.stem)
            if match is None:
                yield SkippedItem(path.name, "file name does not follow aAA_sSS_eEE_vVV")
                continue
            _, subject, repetition, view = (int(group) for group in match.groups())
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                line = getattr(error, "lineno", "?")
                yield SkippedItem(
                    path.name, f"{path.name}:{line}: not valid JSON ({error})", malformed=True
                )
                continue
            if not isinstance(record, dict) or "skeletons" not in record or "label" not in record:
                yield SkippedItem(
                    path.name,
                    f"{path.name}: expected an object with 'skeletons' and 'label'",
                    malformed=True,
                )
                continue
            try:
                skeletons = np.asarray(record["skeletons"], dtype=np.float32)
            except (ValueError, TypeError):
                skeletons = np.empty(0)
            if (
                skeletons.ndim != 3
                or skeletons.shape[0] < 1
                or skeletons.shape[1:] != (source_joints, 3)
            ):
                yield SkippedItem(
                    path.name,
                    f"{path.name}: field 'skeletons' has shape {skeletons.shape}, expected [T][{source_joints}][3] with T >= 1",
                    malformed=True,
                )
                continue
            label = record["label"]
            if (
                isinstance(label, bool)
                or not isinstance(label, int)
                or not 1 <= label <= len(class_names)
            ):
                yield SkippedItem(
                    path.name,
                    f"{path.name}: field 'label' is {label!r}, expected 1..{len(class_names)}",
                    malformed=True,
                )
                continue
            joints = map_joints(skeletons[:, None], weights)  # (T, 20, 3) -> (T, 1, 25, 3)
            yield SequenceRecord(
                sample_id=path.stem,
                label=label - 1,
                joints=joints,
                partition=partition_of(benchmark, subject, view, repetition),
                subject=subject,
                view=view,
                setup=repetition,
            )

    return _ImportPlan(info=info, total=len(files), items=items())


# --------------------------------------------------------------------------------------------
# Generic arrays (.npz or Parquet)


def _optional_ints(columns: dict[str, Any], name: str, count: int, where: str) -> np.ndarray:
    if name not in columns or columns[name] is None:
        return np.full(count, -1, dtype=np.int64)
    values = _as_integer_labels(np.asarray(columns[name]), where, name)
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
    keys = _npz_keys(source)
    _require_keys(source, keys, ("joints", "labels"))
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
            f"{source}: missing columns {absent}; it has {names} (see `arrays` in neuron.importers)"
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


def _plan_arrays(
    source: Path,
    benchmark: str | None,
    class_names_file: str | Path | None,
    joint_map_file: str | Path | None,
) -> _ImportPlan:
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
            f"{source}: arrays SOURCE must be an .npz or .parquet file (see neuron.importers)"
        )
    columns, count = content.columns, content.count
    if count == 0:
        raise DatasetError(f"{where}: no sequences")
    labels = _as_integer_labels(np.asarray(columns["labels"]), where, "labels")
    if len(labels) != count:
        raise DatasetError(
            f"{where}: labels has {len(labels)} entries but there are {count} sequences"
        )
    _check_labels(
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
    weights = read_joint_map(joint_map_file, content.num_source_joints, where)
    dataset = BENCHMARKS[benchmark].dataset if benchmark in BENCHMARKS else "custom"
    info = DatasetInfo(
        dataset=dataset, class_names=class_names, source="arrays", benchmark=benchmark or "custom"
    )

    def items() -> Iterator[SequenceRecord | SkippedItem]:
        for index in range(count):
            trimmed = _trim_sequence(map_joints(content.sequence_at(index), weights))
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

    return _ImportPlan(info=info, total=count, items=items())


# --------------------------------------------------------------------------------------------
# SynSE pre-extracted features


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
        labels = _as_integer_labels(labels, str(folder / labels_name), "labels")
        if len(labels) != len(features):
            raise DatasetError(
                f"{folder / labels_name}: {len(labels)} labels for {len(features)} rows of {features_name}"
            )
        arrays[Path(features_name).stem] = features.astype(np.float32, copy=False)
        arrays[Path(labels_name).stem] = labels
    return arrays


def _import_synse_features(
    source: Path, out: Path, benchmark: str | None, class_names_file: str | Path | None
) -> dict[str, Any]:
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
            "synse-features: give benchmark (e.g. ntu60-xsub) or class_names_file to name the classes"
        )
    arrays = load_synse_features(source)
    features, labels, subsets = [], [], []
    for subset, (features_name, labels_name) in SYNSE_FILES.items():
        subset_labels = arrays[Path(labels_name).stem]
        _check_labels(
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
            "subsets": dict(Counter(subsets)), "unseen_classes": unseen}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Entry points


def import_dataset(
    format: str,
    source: str | Path,
    out: str | Path,
    *,
    benchmark: str | None = None,
    class_names_file: str | Path | None = None,
    joint_map_file: str | Path | None = None,
    progress: bool = True,
    strict: bool = False,
    workers: int = 0,
) -> dict[str, Any]:
    """Import SOURCE in `format` (one of IMPORT_FORMATS) into the dataset file OUT.

    OUT (`.arrow` or `.parquet`; `.arrow` for `synse-features`) appears only if the import
    succeeds. Malformed items are skipped and listed in the summary unless `strict`, which
    stops at the first one. `workers` processes parse raw `.skeleton` files (`ntu-raw`;
    0: one per CPU core, at most 8); the output is identical for any number. Returns a JSON-serialisable summary: format, source, output,
    dataset, benchmark, classes, sequences (written), train, test, skipped (list of
    {item, reason}), skipped_count, seconds, sequences_per_second.
    """
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    if format not in IMPORT_FORMATS:
        raise DatasetError(
            f"unknown import format {format!r}; valid formats: {', '.join(IMPORT_FORMATS)}"
        )
    if not source.exists():
        raise DatasetError(f"{source}: no such file or folder")
    if format == "synse-features":
        summary = _import_synse_features(source, out, benchmark, class_names_file)
        seconds = time.perf_counter() - started
        return {"format": format, "source": str(source), "output": str(out), **summary, "skipped": [],
                "skipped_count": 0, "seconds": seconds,
                "sequences_per_second": summary["sequences"] / max(seconds, 1e-9)}  # fmt: skip
    if out.suffix not in (".arrow", ".parquet"):
        raise DatasetError(f"{out}: the output must end in .arrow (memory-mappable) or .parquet")
    plans: dict[str, Callable[[], _ImportPlan]] = {
        "ntu-raw": lambda: _plan_ntu_raw(
            source, benchmark, class_names_file, workers or min(os.cpu_count() or 1, 8)
        ),
        "ntu-npz": lambda: _plan_preprocessed_npz(format, source, benchmark, class_names_file),
        "pku-npz": lambda: _plan_preprocessed_npz(format, source, benchmark, class_names_file),
        "nw-ucla": lambda: _plan_nw_ucla(source, benchmark, class_names_file),
        "arrays": lambda: _plan_arrays(source, benchmark, class_names_file, joint_map_file),
    }
    plan = plans[format]()
    skipped: list[dict[str, str]] = []
    partitions: Counter[str] = Counter()
    with DatasetWriter(out, plan.info) as writer:
        bar = tqdm(
            plan.items,
            total=plan.total,
            desc=f"import {format}",
            unit="seq",
            file=sys.stderr,
            disable=not progress,
        )
        for item in bar:
            if isinstance(item, SkippedItem):
                if strict and item.malformed:
                    raise DatasetError(
                        f"{item.reason} (strict import: nothing was written to {out})"
                    )
                skipped.append({"item": item.item, "reason": item.reason})
                continue
            writer.add(
                item.sample_id, item.label, item.joints, item.partition,
                subject=item.subject, view=item.view, setup=item.setup,
            )  # fmt: skip
            partitions[item.partition] += 1
        if writer.count == 0:
            reasons = Counter(entry["reason"] for entry in skipped).most_common(3)
            raise DatasetError(
                f"{source}: every item was skipped ({len(skipped)}); most common reasons: {reasons}"
            )
    seconds = time.perf_counter() - started
    return {
        "format": format,
        "source": str(source),
        "output": str(out),
        "dataset": plan.info.dataset,
        "benchmark": plan.info.benchmark,
        "classes": len(plan.info.class_names),
        "sequences": writer.count,
        "train": partitions["train"],
        "test": partitions["test"],
        "skipped": skipped,
        "skipped_count": len(skipped),
        "seconds": seconds,
        "sequences_per_second": writer.count / max(seconds, 1e-9),
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
    return {"kind": "skeletons", **SkeletonTable(path).summary()}
