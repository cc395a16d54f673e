"""The `ntu-raw` importer.

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
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuron.benchmarks import BENCHMARK_NAMES, benchmark_dataset, partition_of
from neuron.dataset import DatasetError, DatasetInfo
from neuron.importers.common import (
    ImportPlan,
    ImportRequest,
    SequenceRecord,
    SkippedItem,
    class_names_for,
    list_files,
    ordered_map,
)
from neuron.joints import NUM_NTU_JOINTS

NTU_MISSING_LISTS: tuple[str, ...] = (
    "NTU_RGBD_samples_with_missing_skeletons.txt",
    "NTU_RGBD120_samples_with_missing_skeletons.txt",
)
"""Official lists of samples to ignore; looked for anywhere inside an `ntu-raw` SOURCE."""

NTU_SAMPLE_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
NTU60_LAST_SETUP = 17
NTU_JOINT_FIELDS = 12
NTU_BODY_FIELDS = 10
SHORT_BODY_FRAMES = 10
"""A body tracked in at most this many frames ranks after longer ones (CTR-GCN denoising)."""


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
                if not np.isfinite(table).all():
                    raise ValueError  # NaN/inf: the loop below names the line
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


def plan(request: ImportRequest) -> ImportPlan:
    """The `.skeleton` files of SOURCE, in file-name order, parsed on `request.workers` processes."""
    source, benchmark = request.source, request.benchmark
    workers = request.workers or min(os.cpu_count() or 1, 8)
    ntu_benchmarks = [name for name in BENCHMARK_NAMES if name.startswith("ntu")]
    if benchmark not in ntu_benchmarks:
        raise DatasetError(
            f"ntu-raw: benchmark {benchmark!r}; the raw NTU import needs one of {', '.join(ntu_benchmarks)} "
            "(it decides the dataset, NTU-60 or NTU-120, and the train/test partition)"
        )
    dataset = benchmark_dataset(benchmark)
    class_names = class_names_for(dataset, request.class_names_file)
    files = list_files(source, "*.skeleton", "NTU RGB+D .skeleton")
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

    return ImportPlan(info=info, total=len(files), items=items())


def _read_ntu_sequence(path: Path) -> np.ndarray | SkippedItem:
    """The kept bodies of one `.skeleton` file (T, M<=2, 25, 3), or why it is skipped."""
    try:
        skeleton = read_ntu_skeleton(path)
    except DatasetError as error:
        return SkippedItem(path.name, str(error), malformed=True)
    if not skeleton.tracked.any():
        return SkippedItem(path.name, "no body in any frame")
    return select_bodies(skeleton, max_bodies=2)
