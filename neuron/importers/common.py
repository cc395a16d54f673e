"""What every importer shares: the records a format yields, label and class-name checks, the
writer loop that turns a plan into a dataset file, and an ordered process pool."""

from __future__ import annotations

import concurrent.futures
import ctypes
import itertools
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from neuron.classes import DATASET_CLASSES
from neuron.dataset import DatasetError, DatasetInfo, DatasetWriter


@dataclass(frozen=True)
class ImportRequest:
    """One `neuron import`: what to read, where to write, and the options every format gets."""

    format: str
    """One of `neuron.importers.IMPORT_FORMATS`."""
    source: Path
    out: Path
    benchmark: str | None = None
    """Benchmark name (`neuron.benchmarks`); some formats require it, others default it."""
    class_names_file: str | Path | None = None
    joint_map_file: str | Path | None = None
    """`arrays` only: source joints → NTU layout, a layout name (`kinect_v1`) or a JSON file
    (see neuron.importers.arrays)."""
    test_subjects: tuple[int, ...] | None = None
    """`arrays` only: the subjects whose sequences form the test partition (the rest: train)."""
    progress: bool = True
    strict: bool = False
    """Stop at the first malformed item instead of skipping it."""
    workers: int = 0
    """Processes that parse raw files (`ntu-raw`); 0: one per CPU core, at most 8."""


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
class ImportPlan:
    """A format's dataset header, its item count (for progress) and its items, read lazily."""

    info: DatasetInfo
    total: int
    items: Iterator[SequenceRecord | SkippedItem]


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file (one per line, line k for label k - 1; blank lines only at
    the end) or a JSON list of strings."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"{path}: no such class names file (text, one name per line, or a JSON list)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}); save the class names as UTF-8"
        ) from error
    if path.suffix == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{path}:{error.lineno}: not valid JSON ({error.msg}); expected a list of class names"
            ) from error
        if not isinstance(names, list):
            raise DatasetError(
                f"{path}: expected a JSON list of strings, got {type(names).__name__}"
            )
        for index, name in enumerate(names):
            if not isinstance(name, str):
                raise DatasetError(
                    f"{path}: entry {index} is {name!r}, not a string; expected a JSON list of "
                    "class names"
                )
        names = [n.strip() for n in names]
    else:
        lines = [line.strip() for line in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()  # trailing blank lines end the file
        # Line k is label k - 1: a blank line inside the list would shift every later label.
        blank = next((number for number, line in enumerate(lines, 1) if not line), None)
        if blank is not None:
            raise DatasetError(
                f"{path}:{blank}: empty class name; line k names label k - 1, so every line up "
                "to the last name needs a name (remove the blank line or name the class)"
            )
        names = lines
    if not names:
        raise DatasetError(f"{path}: no class names; write one name per line")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DatasetError(
            f"{path}: duplicate class names {duplicates}; every class needs a distinct name"
        )
    return tuple(names)


def class_names_for(dataset: str, class_names_file: str | Path | None) -> tuple[str, ...]:
    expected = DATASET_CLASSES[dataset]
    if class_names_file is None:
        return expected
    names = read_class_names(class_names_file)
    if len(names) != len(expected):
        raise DatasetError(
            f"{class_names_file}: {len(names)} class names, but {dataset} has {len(expected)} classes; "
            "give one name per class or leave --class-names out to use the built-in names"
        )
    return names


def check_labels(labels: np.ndarray, num_classes: int, where: str, field: str, hint: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise DatasetError(
            f"{where}: {field}[{bad}] = {int(labels[bad])} is outside 0..{num_classes - 1} "
            f"({num_classes} classes); {hint}"
        )


def as_integer_labels(values: np.ndarray, where: str, field: str) -> np.ndarray:
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


def trim_sequence(joints: np.ndarray) -> np.ndarray | None:
    """Drop trailing all-zero frames and trailing all-zero bodies (keeping body 0); None if all zero."""
    nonzero = joints != 0
    frames = np.flatnonzero(nonzero.any(axis=(1, 2, 3)))
    if frames.size == 0:
        return None
    bodies = np.flatnonzero(nonzero.any(axis=(0, 2, 3)))
    return joints[: frames[-1] + 1, : max(int(bodies[-1]) + 1, 1)]


def list_files(source: Path, pattern: str, what: str) -> list[Path]:
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
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        pending: deque[concurrent.futures.Future] = deque()
        upcoming = iter(chunks)
        for part in itertools.islice(upcoming, workers * ahead):
            pending.append(pool.submit(_map_chunk, function, part))
        while pending:
            results = pending.popleft().result()
            for part in itertools.islice(upcoming, 1):
                pending.append(pool.submit(_map_chunk, function, part))
            yield from results


PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when its parent dies (linux/prctl.h)."""


def die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when the process that started it dies, even by
    SIGKILL (which runs no cleanup, so the pool never tells its workers to stop). On Linux the
    kernel sends SIGKILL (prctl PR_SET_PDEATHSIG); elsewhere a thread polls the parent."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # died before prctl took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _map_chunk(function: Callable[[Any], Any], part: Sequence[Any]) -> list[Any]:
    return [function(item) for item in part]


Importer = Callable[[ImportRequest], dict[str, Any]]
"""Imports a request and returns the format-specific part of the summary."""


def skeleton_importer(plan: Callable[[ImportRequest], ImportPlan]) -> Importer:
    """An importer that writes the sequences of `plan(request)` into a dataset file."""

    def run(request: ImportRequest) -> dict[str, Any]:
        if request.out.suffix not in (".arrow", ".parquet"):
            raise DatasetError(
                f"{request.out}: the output must end in .arrow (memory-mappable) or .parquet"
            )
        return write_plan(plan(request), request)

    return run


def write_plan(plan: ImportPlan, request: ImportRequest) -> dict[str, Any]:
    """Write every record of `plan` to `request.out` (atomically); skipped items are listed,
    and a malformed one stops a strict import with nothing written."""
    out = request.out
    skipped: list[dict[str, str]] = []
    partitions: Counter[str] = Counter()
    with DatasetWriter(out, plan.info) as writer:
        bar = tqdm(
            plan.items,
            total=plan.total,
            desc=f"import {request.format}",
            unit="seq",
            file=sys.stderr,
            disable=not request.progress,
        )
        for item in bar:
            if isinstance(item, SkippedItem):
                if request.strict and item.malformed:
                    raise DatasetError(
                        f"{item.reason} (strict import: nothing was written to {out})"
                    )
                skipped.append({"item": item.item, "reason": item.reason})
                continue
            try:
                writer.add(
                    item.sample_id, item.label, item.joints, item.partition,
                    subject=item.subject, view=item.view, setup=item.setup,
                )  # fmt: skip
            except DatasetError as error:
                # A record the file format refuses (NaN coordinates, a repeated id, ...) is a
                # malformed item like any other: skipped and listed, or the end of a strict import.
                if request.strict:
                    raise DatasetError(
                        f"{error} (strict import: nothing was written to {out})"
                    ) from error
                skipped.append({"item": item.sample_id, "reason": str(error)})
                continue
            partitions[item.partition] += 1
        if writer.count == 0:
            reasons = Counter(entry["reason"] for entry in skipped).most_common(3)
            raise DatasetError(
                f"{request.source}: every item was skipped ({len(skipped)}); most common reasons: {reasons}"
            )
    return {
        "dataset": plan.info.dataset,
        "benchmark": plan.info.benchmark,
        "classes": len(plan.info.class_names),
        "sequences": writer.count,
        "train": partitions["train"],
        "test": partitions["test"],
        "skipped": skipped,
        "skipped_count": len(skipped),
    }
