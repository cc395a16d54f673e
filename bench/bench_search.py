"""Benchmark: the cost of the search machinery, and the memory of concurrent trials.

1. Overhead. The same fixed trials (the base config of the spec, every search parameter left
   out, `train.epochs` fixed so a trial takes ~30 s) run twice: bare, one after the other
   through `neuron.train.fit`, and through `run_search` (Ray Tune + Optuna + checkpoints to the
   storage path + MLflow logging to SQLite), one trial at a time. Reported: the end-to-end wall
   ratio (including `ray.init`, the Tune loop and the MLflow summary) and the per-trial ratio
   (MLflow child run duration / bare `fit` duration).
2. Memory. The same search at 1 and at 2 concurrent trials on one node, sampling every trial
   process (`ray::ImplicitFunc`) from /proc: peak summed RSS, private (anonymous) RSS and PSS,
   and, from /proc/PID/smaps, the pages of the feature cache file each trial maps. The
   per-additional-trial cost is the difference of the peaks; the cache's share of it (PSS growth
   of its mapping) is compared with the size of the file: shared pages, not a copy per trial.

    python bench/bench_search.py                       # quick config, 3 trials of ~30 s
    python bench/bench_search.py --epochs 40 --trials 2 --cache-dir /tmp/cache

Prints JSON, then a Markdown table. The caches are built first (stage 1 of the quick config
takes minutes on 2 cores the first time) and are not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from neuron.config import scale_milestones
from neuron.prepare import prepare
from neuron.train import fit
from search.runner import run_search, study_base
from search.space import IntRange, Range, SpaceRanges
from search.spec import SearchSpec, load_search_spec
from search.tracking import MlflowTracker, check_tracking_uri

SPEC = Path(__file__).resolve().parents[1] / "search" / "specs" / "quick.yaml"


def fixed_spec(
    spec: SearchSpec, trials: int, concurrent: int, epochs: int, output: Path
) -> SearchSpec:
    """`spec` with every search parameter left out and the epochs fixed: identical trials."""
    left_out: dict[str, Range | None] = dict.fromkeys(SpaceRanges().parameters())
    fixed = SpaceRanges().replace(left_out | {"train.epochs": IntRange(fixed=epochs)})
    return dataclasses.replace(
        spec,
        space=fixed,
        num_trials=trials,
        max_concurrent_trials=concurrent,
        scheduler=dataclasses.replace(spec.scheduler, name="none"),
        time_budget_s=None,
        output_dir=str(output),
        tracking_uri=None,
        storage_path=None,
    )


class TrialMemory:
    """Samples the trial processes of a local Ray instance from /proc (Linux): their memory and
    how much of the feature cache file each has mapped (shared page-cache pages, not copies)."""

    def __init__(self, cache_path: Path, interval_s: float = 0.25) -> None:
        self.cache_path = str(cache_path)
        self.interval_s = interval_s
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TrialMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _trial_pids() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if command.startswith(("ray::ImplicitFunc", "ray::train_trial")):
                pids.append(int(entry.name))
        return pids

    @staticmethod
    def _kib(text: str, field: str) -> int:
        return sum(
            int(line.split()[1]) for line in text.splitlines() if line.startswith(field + ":")
        )

    def _cache_mapping(self, smaps: str) -> dict[str, int]:
        """Rss / Pss / Private kB of the mappings of the feature cache file in one process."""
        totals = {"cache_rss": 0, "cache_pss": 0, "cache_private": 0}
        inside = False
        for line in smaps.splitlines():
            first = line.split(maxsplit=1)[0] if line.strip() else ""
            if "-" in first and not first.endswith(":"):  # a mapping's header: range perms ... path
                inside = line.rstrip().endswith(self.cache_path)
                continue
            if not inside:
                continue
            name, _, rest = line.partition(":")
            if name == "Rss":
                totals["cache_rss"] += int(rest.split()[0])
            elif name == "Pss":
                totals["cache_pss"] += int(rest.split()[0])
            elif name in ("Private_Clean", "Private_Dirty"):
                totals["cache_private"] += int(rest.split()[0])
        return totals

    def _run(self) -> None:
        while not self._stop.is_set():
            totals = {"rss": 0, "anonymous": 0, "pss": 0, "processes": 0}
            for pid in self._trial_pids():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                    smaps = Path(f"/proc/{pid}/smaps").read_text()
                except OSError:
                    continue
                totals["rss"] += self._kib(status, "VmRSS")
                totals["anonymous"] += self._kib(status, "RssAnon")
                totals["pss"] += self._kib(rollup, "Pss")
                totals["processes"] += 1
                for key, value in self._cache_mapping(smaps).items():
                    totals[key] = totals.get(key, 0) + value
            if totals["rss"] > self.peaks.get("rss", 0):
                self.peaks = totals
            time.sleep(self.interval_s)


def bare(spec: SearchSpec, trials: int, epochs: int, workdir: Path) -> list[float]:
    """Seconds of each fixed trial run directly through fit (same config as in the search)."""
    split = spec.split_names[0]
    base = study_base(spec, split)
    milestones = scale_milestones(base.train.optimizer.lr_milestones, base.train.epochs, epochs)
    config = base.replace({"train.epochs": epochs, "train.optimizer.lr_milestones": milestones})
    prepared = prepare(config, progress=False)
    durations = []
    for index in range(trials):
        started = time.perf_counter()
        fit(config, None, run_dir=workdir / f"bare-{index}", prepared=prepared)
        durations.append(time.perf_counter() - started)
    return durations


def searched(spec: SearchSpec, name: str) -> tuple[float, list[float]]:
    """(end-to-end seconds of run_search, seconds of each trial's MLflow child run). The MLflow
    store is created first, untimed: a one-off ~10 s schema migration, not a per-search cost."""
    check_tracking_uri(spec.resolved_tracking_uri())
    started = time.perf_counter()
    result = run_search(spec, name)
    total = time.perf_counter() - started
    tracker = MlflowTracker(result.tracking_uri, spec.experiment)
    study = result.studies[0].study_run_id
    runs = tracker.children(study)
    return total, [(r.info.end_time - r.info.start_time) / 1000 for r in runs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spec", default=str(SPEC), help="search spec whose base config is used")
    parser.add_argument("--trials", type=int, default=3, help="fixed trials per measurement")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per trial (~30 s on quick)")
    parser.add_argument(
        "--memory-epochs", type=int, default=40, help="epochs per trial for the memory runs"
    )
    parser.add_argument("--cache-dir", help="run.cache_dir (default: the base config's)")
    parser.add_argument("--output", help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)

    overrides = [f"base.overrides.run.cache_dir={args.cache_dir}"] if args.cache_dir else []
    spec = load_search_spec(args.spec, overrides)
    workdir = Path(args.output or tempfile.mkdtemp(prefix="bench-search-"))

    prepared = prepare(study_base(spec, spec.split_names[0]), progress=True)  # untimed
    bare_seconds = bare(spec, args.trials, args.epochs, workdir)
    search_total, trial_seconds = searched(
        fixed_spec(spec, args.trials, 1, args.epochs, workdir / "s"), "overhead"
    )

    memory = {}
    for concurrent in (1, 2):
        memory_spec = fixed_spec(
            spec, 2, concurrent, args.memory_epochs, workdir / f"m{concurrent}"
        )
        with TrialMemory(prepared.feature_cache_path) as sampler:
            searched(memory_spec, f"memory-{concurrent}")
        memory[concurrent] = sampler.peaks

    cache_mib = prepared.feature_cache_path.stat().st_size / 2**20
    kinds = ("rss", "anonymous", "pss", "cache_pss")
    per_trial = {k: (memory[2][k] - memory[1][k]) / 1024 for k in kinds}
    report = {
        "spec": args.spec,
        "trials": args.trials,
        "epochs_per_trial": args.epochs,
        "bare_trial_s": [round(s, 2) for s in bare_seconds],
        "search_trial_s": [round(s, 2) for s in sorted(trial_seconds)],
        "bare_total_s": round(sum(bare_seconds), 2),
        "search_total_s": round(search_total, 2),
        "end_to_end_ratio": round(search_total / sum(bare_seconds), 3),
        "per_trial_ratio": round(sum(trial_seconds) / sum(bare_seconds), 3),
        "feature_cache_mib": round(cache_mib, 1),
        "peak_trial_memory_mib": {
            str(c): {k: round(v / 1024, 1) if k != "processes" else v for k, v in peaks.items()}
            for c, peaks in memory.items()
        },
        "per_additional_trial_mib": {k: round(v, 1) for k, v in per_trial.items()},
        # The feature cache's share of an additional trial (its PSS growth), in copies of the file.
        "per_additional_trial_cache_copies": round(per_trial["cache_pss"] / cache_mib, 3),
    }
    print(json.dumps(report, indent=2))
    print()
    rows = [
        (f"bare fit, {args.trials} trials × {args.epochs} epochs", f"{report['bare_total_s']} s"),
        ("run_search (Tune + Optuna + MLflow), same trials", f"{report['search_total_s']} s"),
        ("end-to-end ratio (ray.init, Tune, MLflow summary included)", report["end_to_end_ratio"]),
        (
            "per-trial ratio (MLflow run duration / bare fit; target ≤ 1.10)",
            report["per_trial_ratio"],
        ),
        ("feature cache file (memory-mapped)", f"{report['feature_cache_mib']} MiB"),
    ]
    for concurrent, peaks in report["peak_trial_memory_mib"].items():
        rows.append(
            (
                f"{concurrent} concurrent: cache RSS per trial / cache PSS, all trials",
                f"{peaks['cache_rss'] / max(1, peaks['processes']):.1f} / {peaks['cache_pss']} MiB",
            )
        )
    for kind in kinds:
        rows.append(
            (f"per additional trial: {kind}", f"{report['per_additional_trial_mib'][kind]} MiB")
        )
    rows.append(
        ("per additional trial: feature cache copies", report["per_additional_trial_cache_copies"])
    )
    print("| measurement | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
