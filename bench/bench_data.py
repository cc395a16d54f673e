"""Data-path benchmark: import throughput, and one epoch read from Arrow vs a padded `.npy`.

    .venv/bin/python bench/bench_data.py [--quick]

(a) Import throughput (sequences/s) of `nw-ucla` on the real NW-UCLA files in ../shared/data
    (when present) and of the generic `arrays` format on a generated `.npz`.
    `ntu-raw` is timed on one process and on one per core (`workers`), on the real NTU
    `.skeleton` samples in ../shared/data linked under 300 distinct sample names.
(b) One epoch over every sequence of each imported dataset, read two ways in the same run:
    the Arrow file through `SkeletonTable` (memory-mapped, zero copy) and the same sequences as
    a padded dense (N, T_max, M, V, 3) float32 array saved with `np.save` and opened with
    `np.load(mmap_mode="r")`. "raw" copies each sequence out (the bytes a loader must touch);
    "prepare" also runs `neuron.preprocess.prepare_sequence` (training mode, window 64).
    Both files sit in the page cache (hot reads, as in repeated epochs); torch uses 1 thread,
    as a DataLoader worker does. Best of `repeats` runs.

Prints the results as JSON, then a Markdown table with the npy/Arrow time ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuron.dataset import SkeletonTable  # noqa: E402
from neuron.importers import import_dataset  # noqa: E402
from neuron.preprocess import prepare_sequence  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NW_UCLA = SHARED_DATA / "nw_ucla" / "all_sqe"
NTU_RAW = SHARED_DATA / "ntu_raw_samples"


def link_ntu_samples(folder: Path, count: int) -> Path:
    """`count` links to the real NTU samples, each under its own NTU-60 sample name."""
    folder.mkdir()
    samples = sorted(NTU_RAW.glob("*.skeleton"))
    for i in range(count):
        name = f"S001C00{1 + i % 3}P{1 + i // 60:03d}R001A{1 + i % 60:03d}.skeleton"
        (folder / name).symlink_to(samples[i % len(samples)])
    return folder


def generate_arrays(path: Path, count: int, seed: int) -> None:
    """A generic `arrays` .npz: random-walk sequences of 20..120 frames, 1 or 2 bodies."""
    rng = np.random.default_rng(seed)
    joints = np.empty(count, dtype=object)
    for index in range(count):
        frames, bodies = int(rng.integers(20, 121)), int(rng.integers(1, 3))
        start = rng.normal(size=(1, bodies, 25, 3))
        joints[index] = (
            start + np.cumsum(rng.normal(scale=0.01, size=(frames, bodies, 25, 3)), axis=0)
        ).astype(np.float32)
    labels = rng.integers(0, 10, size=count)
    partition = np.where(rng.random(count) < 0.7, "train", "test")
    np.savez(path, joints=joints, labels=labels, partition=partition)


def write_padded_npy(table: SkeletonTable, path: Path) -> None:
    """The same sequences as one zero-padded (N, T_max, M_max, V, 3) float32 array."""
    dense = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32,
        shape=(len(table), int(table.num_frames.max()), int(table.num_bodies.max()), table.info.num_joints, 3),
    )  # fmt: skip
    for index in range(len(table)):
        sequence = table.sequence(index)
        dense[index, : sequence.shape[0], : sequence.shape[1]] = sequence
    dense.flush()
    del dense


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def epoch_benchmark(arrow_path: Path, work: Path, repeats: int) -> dict[str, Any]:
    table = SkeletonTable(arrow_path)
    npy_path = work / f"{arrow_path.stem}_padded.npy"
    write_padded_npy(table, npy_path)
    frames, bodies = table.num_frames.astype(np.int64), table.num_bodies.astype(np.int64)
    dense = np.load(npy_path, mmap_mode="r")

    def arrow_sequence(index: int) -> np.ndarray:
        return table.sequence(index)

    def npy_sequence(index: int) -> np.ndarray:
        return dense[index, : frames[index], : bodies[index]]

    def raw_epoch(read: Callable[[int], np.ndarray]) -> float:
        checksum = 0.0
        for index in range(len(table)):
            checksum += float(np.array(read(index), copy=True)[0, 0, 0, 0])
        return checksum

    def prepare_epoch(read: Callable[[int], np.ndarray]) -> None:
        for index in range(len(table)):
            prepare_sequence(read(index), 64, 2, True, 0.5, 0.0, np.random.default_rng(index))

    assert raw_epoch(arrow_sequence) == raw_epoch(npy_sequence)
    open_arrow = best_seconds(lambda: SkeletonTable(arrow_path), repeats)
    open_npy = best_seconds(lambda: np.load(npy_path, mmap_mode="r"), repeats)
    results: dict[str, Any] = {
        "dataset": arrow_path.stem,
        "sequences": len(table),
        "arrow_mib": arrow_path.stat().st_size / 2**20,
        "npy_mib": npy_path.stat().st_size / 2**20,
        "open_s": {"arrow": open_arrow, "npy": open_npy},
        "raw_epoch_s": {
            "arrow": best_seconds(lambda: raw_epoch(arrow_sequence), repeats),
            "npy": best_seconds(lambda: raw_epoch(npy_sequence), repeats),
        },
        "prepare_epoch_s": {
            "arrow": best_seconds(lambda: prepare_epoch(arrow_sequence), max(1, repeats - 1)),
            "npy": best_seconds(lambda: prepare_epoch(npy_sequence), max(1, repeats - 1)),
        },
    }
    for key in ("raw_epoch_s", "prepare_epoch_s"):
        results[key.replace("_s", "_sequences_per_second")] = {
            name: len(table) / seconds for name, seconds in results[key].items()
        }
    return results


def import_benchmark(format: str, source: Path, out: Path, **options: Any) -> dict[str, Any]:
    summary = import_dataset(format, source, out, progress=False, **options)
    return {
        "format": format,
        "source": str(source),
        "sequences": summary["sequences"],
        "seconds": summary["seconds"],
        "sequences_per_second": summary["sequences_per_second"],
        "output_mib": out.stat().st_size / 2**20,
    } | ({"workers": options["workers"]} if "workers" in options else {})


def markdown(results: dict[str, Any]) -> str:
    rows = [
        "| measurement | sequences | Arrow | npy (padded, mmap) | npy / Arrow time |",
        "|---|---:|---:|---:|---:|",
    ]
    for entry in results["import"]:
        workers = f", {entry['workers']} process(es)" if "workers" in entry else ""
        rows.append(
            f"| import `{entry['format']}`{workers} ({entry['output_mib']:.1f} MiB out) | {entry['sequences']} | "
            f"{entry['sequences_per_second']:.0f} seq/s ({entry['seconds']:.2f} s) | – | – |"
        )
    if "ntu_raw_speedup" in results:
        rows.append(
            f"| import `ntu-raw`: {results['ntu_raw_speedup']['workers']} processes vs 1 | – | "
            f"{results['ntu_raw_speedup']['ratio']:.2f}× faster | – | – |"
        )
    for entry in results["epoch"]:
        name, count = entry["dataset"], entry["sequences"]
        rows.append(
            f"| file size, {name} | {count} | {entry['arrow_mib']:.1f} MiB | {entry['npy_mib']:.1f} MiB | "
            f"{entry['npy_mib'] / entry['arrow_mib']:.2f} (size) |"
        )
        for key, label in (
            ("open_s", "open"),
            ("raw_epoch_s", "raw epoch"),
            ("prepare_epoch_s", "prepare epoch"),
        ):
            arrow, npy = entry[key]["arrow"], entry[key]["npy"]
            rows.append(
                f"| {label}, {name} | {count} | {arrow * 1e3:.1f} ms | {npy * 1e3:.1f} ms | {npy / arrow:.2f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer sequences and repeats (about 15 s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 2 if args.quick else 3
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch_threads": 1,
        },
        "quick": args.quick,
        "import": [],
        "epoch": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_data_") as folder:
        work = Path(folder)
        arrow_files = []
        if NW_UCLA.is_dir():
            source = NW_UCLA
            if args.quick:  # every 4th file (371), linked, never copied into the repository
                source = work / "nw_ucla_subset"
                source.mkdir()
                for path in sorted(NW_UCLA.glob("*.json"))[::4]:
                    (source / path.name).symlink_to(path)
            results["import"].append(import_benchmark("nw-ucla", source, work / "nw_ucla.arrow"))
            arrow_files.append(work / "nw_ucla.arrow")
        else:
            results["nw_ucla"] = f"skipped: {NW_UCLA} is absent"
        if NTU_RAW.is_dir():
            source = link_ntu_samples(work / "ntu_raw", 120 if args.quick else 300)
            timed = [
                import_benchmark(
                    "ntu-raw",
                    source,
                    work / f"ntu_raw_{workers}.arrow",
                    benchmark="ntu60-xsub",
                    workers=workers,
                )
                for workers in (1, os.cpu_count() or 1)
            ]
            results["import"] += timed
            results["ntu_raw_speedup"] = {
                "workers": timed[1]["workers"],
                "ratio": timed[0]["seconds"] / timed[1]["seconds"],
            }
        else:
            results["ntu_raw"] = f"skipped: {NTU_RAW} is absent"
        arrays_source = work / "generated_arrays.npz"
        generate_arrays(arrays_source, 500 if args.quick else 2000, args.seed)
        classes = work / "classes.txt"
        classes.write_text("\n".join(f"class {i}" for i in range(10)))
        results["import"].append(
            import_benchmark(
                "arrays", arrays_source, work / "generated_arrays.arrow", class_names_file=classes
            )
        )
        arrow_files.append(work / "generated_arrays.arrow")
        for arrow_path in arrow_files:
            results["epoch"].append(epoch_benchmark(arrow_path, work, repeats))
    results["total_seconds"] = time.perf_counter() - started
    print(json.dumps(results, indent=2))
    print()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
