"""Benchmark: does the search save compute? Optuna TPE + ASHA vs random search without stopping.

Both methods run through the project's search machinery on the same base config and the same
search space (`search/specs/quick.yaml`): Ray Tune runs the trainable `search.trainable.train_trial`
(which calls `neuron.train.fit` on the shared feature cache), proposals come from
`search.runner.NeuronOptunaSearch` (the searcher `neuron search` uses), and the schedulers come from
`search.runner.make_scheduler`:

- **TPE + ASHA**: Optuna's TPE sampler seeded with the search seed, as in `neuron search`, and
  ASHA (grace period, reduction factor below);
- **random**: Optuna's `RandomSampler` with the same seed, in the same searcher class and space
  (so both draw from identical distributions and differ only in the proposal rule), and no early
  stopping (scheduler `none`).

Same number of trials, same concurrency, several search seeds, one process. Every report of a
trial is one trial-epoch of compute; ordering all reports of a run by time gives the best
validation objective found so far after k trial-epochs. Reported per method (mean and 95 % CI
over seeds): the trial-epochs needed to reach the best validation objective random search finds
(its final best, per seed), the final best validation objective, the total trial-epochs, and the
unseen-test metric of each method's winner (the completed trial with the best selected
validation objective; test metrics are computed by `fit` once, at the end of each trial, and
never used for selection). Writes JSON, Markdown and a PNG plot (best-so-far vs trial-epochs,
both methods, CI bands over seeds).

    .venv/bin/python bench/bench_hpo.py                      # 3 seeds x 12 trials x <= 9 epochs
    .venv/bin/python bench/bench_hpo.py --seeds 5 --trials 24 --epochs 15

The default is a cheaper variant of the quick config so that many trials are affordable: its
small synthetic preset, 9 stage-2 epochs per trial instead of 15, ASHA rungs at 3 and 9 epochs;
the stage-1 encoder and the feature cache are built once (reused from `--cache-dir`). The tiny
preset (`--preset tiny`) runs in minutes but does not learn (validation and test stay at chance),
so it only checks the script.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import ray
from ray import tune

from neuron.atomic import atomic_path
from neuron.config import Config
from neuron.train import prepare
from search.runner import NeuronOptunaSearch, make_scheduler, study_base, suggest
from search.space import max_epochs
from search.spec import SchedulerSpec, SearchSpec, load_search_spec
from search.trainable import train_trial

SPEC = Path(__file__).resolve().parents[1] / "search" / "specs" / "quick.yaml"
METHODS = ("tpe_asha", "random")
LABELS = {"tpe_asha": "Optuna TPE + ASHA", "random": "random search, no early stopping"}


def run_method(
    method: str, seed: int, spec: SearchSpec, base: Config, prepared: Any, storage: Path
) -> list[dict[str, Any]]:
    """One search; every report of every trial as a row (time, trial, epoch, objective, ...)."""
    objective = spec.objective.metric
    sampler = optuna.samplers.RandomSampler(seed=seed) if method == "random" else None
    searcher = NeuronOptunaSearch(
        space=functools.partial(suggest, ranges=spec.space, base=base),
        metric=objective,
        mode=spec.objective.mode,
        seed=None if sampler else seed,
        sampler=sampler,
    )
    scheduler_spec = dataclasses.replace(
        spec.scheduler, name="asha" if method == "tpe_asha" else "none"
    )
    scheduler = make_scheduler(
        dataclasses.replace(spec, scheduler=scheduler_spec), max_epochs(spec.space, base)
    )
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, base=base.to_dict(), prepared=prepared),
        {"cpu": spec.resources.cpu, "gpu": 0},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=spec.num_trials,
            max_concurrent_trials=spec.max_concurrent_trials,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{method}-seed{seed}",
            storage_path=str(storage),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    results = tuner.fit()
    rows = []
    for index in range(len(results)):
        result = results[index]
        if result.metrics_dataframe is None:
            continue
        frame = result.metrics_dataframe
        last = result.metrics or {}
        completed = "best_epoch" in last
        for record in frame.to_dict("records"):
            if objective not in record or record.get(objective) is None:
                continue
            rows.append(
                {
                    # Reports in wall-clock order: `timestamp` is whole seconds, so ties are
                    # broken by the trial's own running time.
                    "time": (int(record["timestamp"]), float(record.get("time_total_s", 0.0))),
                    "trial": result.path,
                    "epoch": int(record.get("epoch", record["training_iteration"])),
                    "objective": float(record[objective]),
                    "completed": completed,
                    "selected": float(last.get(f"selected/{objective}", float("nan"))),
                    "test": float(last.get("test/zsl_top1", float("nan"))),
                }
            )
    rows.sort(key=lambda row: (row["time"], row["epoch"]))
    return rows


def best_so_far(rows: list[dict[str, Any]]) -> np.ndarray:
    """Best validation objective after each trial-epoch (index k: after k + 1 trial-epochs)."""
    return np.maximum.accumulate(np.array([row["objective"] for row in rows]))


def winner_test(rows: list[dict[str, Any]]) -> float:
    """Unseen-test ZSL of the completed trial with the best selected validation objective."""
    completed = [row for row in rows if row["completed"] and not math.isnan(row["selected"])]
    if not completed:
        return float("nan")
    return max(completed, key=lambda row: row["selected"])["test"]


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a 95 % t confidence interval (0 for one value)."""
    array = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if len(array) == 0:
        return float("nan"), float("nan")
    if len(array) == 1:
        return float(array[0]), 0.0
    from scipy import stats

    half = stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array))
    return float(array.mean()), float(half)


def plot(curves: dict[str, list[np.ndarray]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for method, runs in curves.items():
        length = max(len(run) for run in runs)
        # A finished search keeps its best value: pad each curve with its last value.
        padded = np.array([np.pad(run, (0, length - len(run)), mode="edge") for run in runs])
        steps = np.arange(1, length + 1)
        mean = padded.mean(0)
        if len(runs) > 1:
            from scipy import stats

            half = stats.t.ppf(0.975, len(runs) - 1) * padded.std(0, ddof=1) / math.sqrt(len(runs))
            axis.fill_between(steps, mean - half, mean + half, alpha=0.2)
        axis.plot(steps, mean, label=f"{LABELS[method]} ({len(runs)} seeds)")
    axis.set_xlabel("trial-epochs (stage-2 epochs summed over trials)")
    axis.set_ylabel("best validation objective so far")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="search seeds per method")
    parser.add_argument("--trials", type=int, default=12, help="trials per search")
    parser.add_argument("--epochs", type=int, default=9, help="stage-2 epochs of a full trial")
    parser.add_argument("--grace", type=int, default=3, help="ASHA grace period (epochs)")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once")
    parser.add_argument("--preset", default="small", help="synthetic preset of the quick config")
    parser.add_argument("--cache-dir", default=None, help="reuse a cache (default: temporary)")
    parser.add_argument("--out-dir", default="bench/results", help="JSON, Markdown and PNG here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-hpo-"))
    cache_dir = args.cache_dir or str(work / "cache")
    spec = load_search_spec(
        SPEC,
        {
            "num_trials": args.trials,
            "max_concurrent_trials": args.concurrent,
            "base.overrides": {
                "data.synthetic.preset": args.preset,
                "train.epochs": args.epochs,
                "train.optimizer.lr_milestones": [max(1, (2 * args.epochs) // 3)],
                "run.cache_dir": cache_dir,
                "run.threads": 1,
            },
        },
    )
    spec = dataclasses.replace(
        spec,
        scheduler=SchedulerSpec(
            name="asha", grace_period=args.grace, reduction_factor=float(args.reduction_factor)
        ),
    )
    split = spec.splits[0]
    base = study_base(spec, split)
    prepared = prepare(base, progress=False)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(address="local", num_cpus=args.concurrent, include_dashboard=False)
    started = time.perf_counter()
    runs: dict[str, list[list[dict[str, Any]]]] = {method: [] for method in METHODS}
    try:
        for seed in range(args.seeds):
            for method in METHODS:
                runs[method].append(run_method(method, seed, spec, base, prepared, work / "tune"))
            # Written after every seed, so an interrupted run still leaves its finished seeds.
            write_report(
                runs, args, spec, time.perf_counter() - started, final=seed == args.seeds - 1
            )
    finally:
        ray.shutdown()


def write_report(
    runs: dict[str, list[list[dict[str, Any]]]],
    args: argparse.Namespace,
    spec: SearchSpec,
    wall: float,
    final: bool,
) -> None:
    """Summaries over the seeds finished so far: JSON, Markdown, the plot; printed when final."""
    seeds = len(runs["random"])
    curves = {method: [best_so_far(rows) for rows in runs[method]] for method in METHODS}
    per_seed = []
    for seed in range(seeds):
        target = float(curves["random"][seed][-1])  # random search's final best, this seed
        record: dict[str, Any] = {"seed": seed, "random_best": target}
        for method in METHODS:
            curve = curves[method][seed]
            reached = np.flatnonzero(curve >= target - 1e-12)
            record[method] = {
                "trial_epochs_total": len(curve),
                "trial_epochs_to_random_best": int(reached[0]) + 1 if len(reached) else None,
                "final_best_validation": float(curve[-1]),
                "winner_unseen_test_zsl_top1": winner_test(runs[method][seed]),
            }
        per_seed.append(record)

    summary: dict[str, Any] = {}
    for method in METHODS:
        reached_at = [r[method]["trial_epochs_to_random_best"] for r in per_seed]
        summary[method] = {
            "trial_epochs_to_random_best": mean_ci(
                [float("nan") if v is None else float(v) for v in reached_at]
            ),
            "seeds_reaching_random_best": sum(v is not None for v in reached_at),
            "trial_epochs_total": mean_ci([r[method]["trial_epochs_total"] for r in per_seed]),
            "final_best_validation": mean_ci(
                [r[method]["final_best_validation"] for r in per_seed]
            ),
            "winner_unseen_test_zsl_top1": mean_ci(
                [r[method]["winner_unseen_test_zsl_top1"] for r in per_seed]
            ),
        }
    fractions = [
        r["tpe_asha"]["trial_epochs_to_random_best"] / r["random"]["trial_epochs_to_random_best"]
        for r in per_seed
        if r["tpe_asha"]["trial_epochs_to_random_best"] is not None
    ]
    report = {
        "base": f"quick config, synthetic preset {args.preset}, {args.epochs} stage-2 epochs",
        "objective": spec.objective.metric,
        "trials_per_search": args.trials,
        "concurrent_trials": args.concurrent,
        "seeds": seeds,
        "seeds_planned": args.seeds,
        "asha": {"grace_period": args.grace, "reduction_factor": args.reduction_factor},
        "tpe": "Optuna TPESampler(seed) as in `neuron search` (its first 10 trials are random)",
        "random": "Optuna RandomSampler(seed), scheduler none",
        "wall_seconds": round(wall, 1),
        "summary": summary,
        "tpe_asha_fraction_of_random_trial_epochs_to_random_best": mean_ci(fractions),
        "tpe_asha_reached_random_best_in_seeds": f"{len(fractions)}/{seeds}",
        "per_seed": per_seed,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "bench_hpo.json") as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n")
    plot(
        curves,
        out / "bench_hpo.png",
        f"{report['base']}; {args.trials} trials, {seeds} seeds; mean, 95 % CI",
    )

    def cell(value: tuple[float, float], digits: int) -> str:
        mean, half = value
        return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {half:.{digits}f}"

    lines = [
        f"{report['base']}, {args.trials} trials per search, {args.concurrent} at a time, "
        f"{seeds} search seeds, objective {spec.objective.metric} (mean ± 95 % CI over seeds)",
        "",
        "| method | trial-epochs to random's best | final best validation | total trial-epochs "
        "| winner's unseen-test ZSL top-1 |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        row = summary[method]
        lines.append(
            f"| {LABELS[method]} | {cell(row['trial_epochs_to_random_best'], 1)} "
            f"({row['seeds_reaching_random_best']}/{seeds} seeds) "
            f"| {cell(row['final_best_validation'], 3)} | {cell(row['trial_epochs_total'], 1)} "
            f"| {cell(row['winner_unseen_test_zsl_top1'], 3)} |"
        )
    lines += [
        "",
        "TPE + ASHA's trial-epochs to reach random's best, as a fraction of random's: "
        f"{cell(report['tpe_asha_fraction_of_random_trial_epochs_to_random_best'], 2)} "
        f"(seeds where TPE + ASHA reached it: {report['tpe_asha_reached_random_best_in_seeds']}). "
        f"Wall time {wall / 60:.1f} min. Plot: {out / 'bench_hpo.png'}",
    ]
    markdown = "\n".join(lines) + "\n"
    with atomic_path(out / "bench_hpo.md") as temporary:
        temporary.write_text(markdown)
    if final:
        print(json.dumps(report, indent=2))
        print()
        print(markdown)


if __name__ == "__main__":
    main()
