"""Benchmark: does the search save compute? Optuna TPE + ASHA vs random search without stopping.

Both methods run through the project's search machinery on the same base config and the same
search space (`search/specs/quick.yaml`): Ray Tune runs the trainable `search.trainable.train_trial`
(which calls `neuron.train.fit` on the shared feature cache), proposals come from
`search.runner.NeuronOptunaSearch` (the searcher `neuron search` uses), and the schedulers come from
`search.runner.make_scheduler`:

- **TPE + ASHA**: the spec's sampler (`sampler` in quick.yaml: TPE seeded with the search seed,
  its startup trials random; `--startup-trials` and `--multivariate` change it), as in
  `neuron search`, and ASHA (grace period, reduction factor below) comparing what `neuron
  search` compares (`search.runner.ranking_metric`: the best validation objective each trial has
  selected so far);
- **random**: Optuna's `RandomSampler` with the same seed, in the same searcher class and space
  (so both draw from identical distributions and differ only in the proposal rule), and no early
  stopping (scheduler `none`).

TPE's startup trials come from a `RandomSampler` with the same seed, so both methods start with
the same configurations (and, on CPU, the same curves): until TPE takes over, the two differ only
by ASHA's stopping. Optuna counts only finished trials toward the startup trials, so with trials
running concurrently TPE takes over a little later than `--startup-trials`.

Same number of trials, same concurrency, several search seeds, one process. Every report of a
trial is one trial-epoch of compute; taking all reports of a run in the order the driver
received them (a Tune callback) gives the best validation objective found so far after k
trial-epochs. Reported per method (mean and 95 % CI over seeds): the trial-epochs needed to
reach the best validation objective random search finds (its final best, per seed), the final
best validation objective, the total trial-epochs, and the unseen-test metric of each method's
winner (the completed trial with the best selected validation objective; test metrics are
computed by `fit` once, at the end of each trial, and never used for selection). Then TPE +
ASHA's trial-epochs to random's best as a fraction of random's trial-epochs to it and of its
total (per seed; mean and CI over the seeds where TPE + ASHA got there, and the median over all
seeds, a seed that never got there counting as infinite), random's best at TPE + ASHA's total
trial-epochs (equal compute), and how well ASHA's first rung predicts a trial's best (on random
search's trials, which all run to the end: the epoch's objective and the best so far, at the
first rung and at every epoch). Then each search's winner is trained again with `--reseeds` run
seeds the searches never used (every trial trains with the base config's seed): its mean
validation objective and unseen-test ZSL over those seeds, how far its value in the search lay
above that mean, TPE + ASHA minus random paired by search seed, and the objective's standard
deviation over seeds of one configuration against its spread over random's configurations. The
best trial so far after a third of random's trial-epochs is re-trained the same way, for each
method: the goal read on what configurations are worth rather than on one lucky value (is TPE +
ASHA's pick at a third of the compute as good as random search's final winner?).
Writes JSON (with every report, enough to redraw the
curves: `--from-json` rewrites all outputs from it), Markdown and a PNG plot (best-so-far vs
trial-epochs, both methods, CI bands over seeds) named `--name`.

    .venv/bin/python bench/bench_hpo.py                      # 3 seeds x 12 trials x <= 9 epochs
    .venv/bin/python bench/bench_hpo.py --seeds 10 --first-seed 10 --trials 40 \
        --name bench_hpo_40trials_grace1

The default is a cheaper variant of the quick config so that many trials are affordable: its
small synthetic preset, 9 stage-2 epochs per trial instead of 15 (the learning rate drops after
epoch 6), ASHA rungs at 1, 2, 4 and 8 epochs (grace 1, reduction factor 2);
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
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune

from neuron.atomic import atomic_path
from neuron.config import Config
from neuron.train import fit, prepare
from search.runner import (
    NeuronOptunaSearch,
    make_sampler,
    make_scheduler,
    ranking_metric,
    study_base,
    suggest,
)
from search.space import max_epochs
from search.spec import SamplerSpec, SchedulerSpec, SearchSpec, load_search_spec
from search.tracking import DIVERGED
from search.trainable import train_trial

SPEC = Path(__file__).resolve().parents[1] / "search" / "specs" / "quick.yaml"
METHODS = ("tpe_asha", "random")
SETTINGS = (
    "seeds",
    "first_seed",
    "trials",
    "epochs",
    "grace",
    "reduction_factor",
    "startup_trials",
    "multivariate",
    "asha_compares",
    "concurrent",
    "preset",
    "reseeds",
)
"""The flags a run's JSON records, so that `--from-json` needs none of them."""
LABELS = {"tpe_asha": "Optuna TPE + ASHA", "random": "random search, no early stopping"}


class ReportOrder(tune.Callback):
    """The driver's order of trial reports: (trial id, epoch, objective) as Tune hands each
    result to the scheduler and the searcher. Reports that only repeat a diverged trial's last
    epoch (`DIVERGED` set) cost no compute and are left out."""

    def __init__(self, objective: str) -> None:
        self.objective = objective
        self.reports: list[tuple[str, int, float]] = []

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        value = result.get(self.objective)
        if value is None or result.get(DIVERGED):
            return
        epoch = int(result.get("epoch", result["training_iteration"]))
        self.reports.append((str(trial.trial_id), epoch, float(value)))


def method_sampler(method: str, spec: SearchSpec) -> SamplerSpec:
    """Random: Optuna's RandomSampler. TPE: the spec's sampler (`sampler` in the search spec,
    as `neuron search` runs it, with `--startup-trials` / `--multivariate` applied)."""
    if method == "random":
        return SamplerSpec(name="random")
    return spec.sampler


def run_method(
    method: str,
    seed: int,
    spec: SearchSpec,
    base: Config,
    prepared: Any,
    storage: Path,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """One search: every report of every trial as a row (trial, epoch, objective, ...), in the
    order the driver received them, and each trial's proposed overrides."""
    objective = spec.objective.metric
    searcher = NeuronOptunaSearch(
        space=functools.partial(suggest, ranges=spec.space, base=base),
        metric=objective,
        mode=spec.objective.mode,
        sampler=make_sampler(method_sampler(method, spec), seed),
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
    order = ReportOrder(objective)
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
            callbacks=[order],
            verbose=0,
        ),
    )
    results = tuner.fit()
    if results.num_terminated < spec.num_trials:
        # An interrupted search (Tune returns normally after SIGINT) or failed trials would
        # compare a partial search; the seeds finished before stay in the report.
        raise SystemExit(
            f"{method}, seed {seed}: {results.num_terminated} of {spec.num_trials} trials "
            f"finished ({results.num_errors} failed); this search is not reported"
        )
    final: dict[str, dict[str, Any]] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for index in range(len(results)):
        last = results[index].metrics or {}
        if "trial_id" in last:
            final[str(last["trial_id"])] = last
            overrides[str(last["trial_id"])] = dict((results[index].config or {})["overrides"])
    rows = []
    for trial_id, epoch, value in order.reports:
        last = final.get(trial_id, {})
        rows.append(
            {
                "trial": trial_id,
                "epoch": epoch,
                "objective": value,
                "completed": "best_epoch" in last and not last.get(DIVERGED),
                "selected": float(last.get(f"selected/{objective}", float("nan"))),
                "test": float(last.get("test/zsl_top1", float("nan"))),
            }
        )
    return rows, overrides


def winner(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The report row of the completed trial with the best selected validation objective."""
    completed = [row for row in rows if row["completed"] and not math.isnan(row["selected"])]
    return max(completed, key=lambda row: row["selected"]) if completed else None


def incumbent(rows: list[dict[str, Any]], budget: int) -> tuple[str, float] | None:
    """The trial holding the best objective reported in the first `budget` trial-epochs (what
    the best-so-far curve shows there) and that objective; None before any report."""
    shown = [row for row in rows[:budget] if not math.isnan(row["objective"])]
    if not shown:
        return None
    best = max(shown, key=lambda row: row["objective"])
    return best["trial"], best["objective"]


def reseed(
    base: Config, overrides: dict[str, Any], prepared: Any, seeds: list[int], threads: int
) -> dict[str, list[float]]:
    """A winner's configuration trained again with other run seeds (what the search never saw:
    head initialisation, sample order and augmented views), complete runs as a trial runs them:
    the selected validation objective and the unseen-test ZSL of each."""
    objective = base.eval.selection_metric
    values: dict[str, list[float]] = {"validation": [], "test": []}
    for seed in seeds:
        cfg = base.replace(overrides | {"run.seed": seed, "run.threads": threads})
        with tempfile.TemporaryDirectory(prefix="bench-hpo-reseed-") as run_dir:
            metrics = fit(cfg, None, run_dir=run_dir, prepared=prepared).metrics
        values["validation"].append(round(float(metrics[objective]), 6))
        values["test"].append(round(float(metrics["test/zsl_top1"]), 6))
    return values


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


def pad(curves: list[np.ndarray]) -> np.ndarray:
    """Best-so-far curves of several seeds as one array (seeds, trial-epochs): a finished
    search keeps its best value, so each curve is padded with its last value."""
    length = max(len(curve) for curve in curves)
    return np.array([np.pad(curve, (0, length - len(curve)), mode="edge") for curve in curves])


def plot(curves: dict[str, list[np.ndarray]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for method, runs in curves.items():
        padded = pad(runs)
        steps = np.arange(1, padded.shape[1] + 1)
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
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="search seeds are first-seed, first-seed + 1, ... (fresh seeds check settings "
        "chosen on an earlier run's seeds)",
    )
    parser.add_argument("--trials", type=int, default=12, help="trials per search")
    parser.add_argument("--epochs", type=int, default=9, help="stage-2 epochs of a full trial")
    parser.add_argument("--grace", type=int, default=1, help="ASHA grace period (epochs)")
    parser.add_argument("--reduction-factor", type=int, default=2)
    parser.add_argument(
        "--startup-trials",
        type=int,
        default=None,
        help="random trials before TPE proposes (default: the spec's sampler.startup_trials)",
    )
    parser.add_argument(
        "--multivariate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="multivariate TPE (default: the spec's sampler.multivariate)",
    )
    parser.add_argument(
        "--reseeds",
        type=int,
        default=4,
        help="train each search's winner again with this many other run seeds (0: none)",
    )
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once")
    parser.add_argument("--preset", default="small", help="synthetic preset of the quick config")
    parser.add_argument("--cache-dir", default=None, help="reuse a cache (default: temporary)")
    parser.add_argument("--out-dir", default="bench/results", help="JSON, Markdown and PNG here")
    parser.add_argument("--name", default="bench_hpo", help="file name of the outputs, no suffix")
    parser.add_argument(
        "--from-json",
        default=None,
        help="rewrite the outputs from a finished run's JSON (its seeds and reports) instead of "
        "running; pass that run's flags",
    )
    args = parser.parse_args()
    if args.startup_trials is not None and args.startup_trials < 1:
        parser.error(f"--startup-trials must be at least 1, got {args.startup_trials}")
    if args.from_json is not None:
        previous = json.loads(Path(args.from_json).read_text())
        # Runs recorded before these settings existed: Optuna's 10 startup trials, univariate
        # TPE, ASHA on the epoch's objective.
        args.startup_trials, args.multivariate = 10, False
        args.asha_compares, args.first_seed, args.reseeds = previous["objective"], 0, 0
        for key, value in previous.get("settings", {}).items():
            setattr(args, key, value)
        records = [
            seed_record(
                r["seed"],
                r["reports"],
                {method: r[method]["winner_unseen_test_zsl_top1"] for method in METHODS},
                r.get("reseeded"),
            )
            for r in previous["per_seed"]
        ]
        write_report(
            records,
            args,
            previous["objective"],
            previous["wall_seconds"],
            final=True,
        )
        return

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
    sampler = spec.sampler
    if args.startup_trials is not None:
        sampler = dataclasses.replace(sampler, startup_trials=args.startup_trials)
    if args.multivariate is not None:
        sampler = dataclasses.replace(sampler, multivariate=args.multivariate)
    # The flags as run (recorded in the JSON, so --from-json describes this run).
    args.startup_trials, args.multivariate = sampler.startup_trials, sampler.multivariate
    args.asha_compares = ranking_metric(spec)
    spec = dataclasses.replace(
        spec,
        sampler=dataclasses.replace(sampler, name="tpe"),
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
    per_seed: list[dict[str, Any]] = []
    # Seeds the searches never trained with (every trial runs the base config's run.seed).
    reseed_seeds = [base.run.seed + 1 + k for k in range(args.reseeds)]
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            runs = {
                method: run_method(method, seed, spec, base, prepared, work / "tune")
                for method in METHODS
            }
            winners = {method: winner(rows) for method, (rows, _) in runs.items()}
            # The best trial so far after a third of random's trial-epochs, each method.
            third = len(runs["random"][0]) // 3
            picks: dict[str, tuple[str, float] | None] = {
                method: None if best is None else (best["trial"], best["selected"])
                for method, best in winners.items()
            }
            picks |= {
                f"{method}_at_third": incumbent(rows, third) for method, (rows, _) in runs.items()
            }
            reseeded: dict[str, dict[str, Any]] = {}
            trained: dict[tuple[str, str], dict[str, list[float]]] = {}
            for key, pick in picks.items():
                if pick is None or args.reseeds == 0:
                    continue
                method = key.removesuffix("_at_third")
                trial, value = pick
                overrides = runs[method][1][trial]
                if (method, trial) not in trained:
                    trained[method, trial] = reseed(
                        base, overrides, prepared, reseed_seeds, args.concurrent
                    )
                reseeded[key] = {
                    "overrides": overrides,
                    "search_value": value,
                    "seeds": reseed_seeds,
                } | trained[method, trial]
                if key.endswith("_at_third"):
                    reseeded[key]["trial_epochs"] = third
            per_seed.append(
                seed_record(
                    seed,
                    {method: compact(rows) for method, (rows, _) in runs.items()},
                    {
                        method: float("nan") if best is None else best["test"]
                        for method, best in winners.items()
                    },
                    reseeded,
                )
            )
            # Written after every seed, so an interrupted run still leaves its finished seeds.
            wall = time.perf_counter() - started
            write_report(
                per_seed, args, spec.objective.metric, wall, final=len(per_seed) == args.seeds
            )
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def trial_epochs_to(curve: np.ndarray, target: float) -> int | None:
    """Trial-epochs until the best-so-far curve first reaches `target`; None if it never does."""
    reached = np.flatnonzero(curve >= target - 1e-12)
    return int(reached[0]) + 1 if len(reached) else None


def dumps(report: dict[str, Any]) -> str:
    """The report as indented JSON, each search's reports on one line (they are most of it)."""
    shown = report | {
        "per_seed": [r | {"reports": f"@reports{i}@"} for i, r in enumerate(report["per_seed"])]
    }
    text = json.dumps(shown, indent=2)
    for i, record in enumerate(report["per_seed"]):
        text = text.replace(f'"@reports{i}@"', json.dumps(record["reports"], separators=(",", ":")))
    return text


def compact(rows: list[dict[str, Any]]) -> list[list[float]]:
    """The reports of one search as [trial number, epoch, objective], trials numbered in the
    order of their first report (enough to redraw the curves)."""
    numbers: dict[str, int] = {}
    return [
        [numbers.setdefault(row["trial"], len(numbers)), row["epoch"], row["objective"]]
        for row in rows
    ]


def curve_of(reports: list[list[float]]) -> np.ndarray:
    """Best validation objective after each trial-epoch, from `compact` reports."""
    return np.maximum.accumulate(np.array([objective for _, _, objective in reports]))


def seed_record(
    seed: int,
    reports: dict[str, list[list[float]]],
    winners: dict[str, float],
    reseeded: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Both searches of one seed from their reports (`compact`), winners' unseen-test metrics
    and winners trained again with other seeds (`reseed`, kept as given): trial-epochs to
    random's best, final bests, fractions, equal-compute bests."""
    # Six decimals keep the JSON small and are far finer than any validation metric's step.
    reports = {
        method: [[int(trial), int(epoch), round(float(value), 6)] for trial, epoch, value in rows]
        for method, rows in reports.items()
    }
    curves = {method: curve_of(reports[method]) for method in METHODS}
    target = float(curves["random"][-1])  # random search's final best, this seed
    record: dict[str, Any] = {"seed": seed, "random_best": target}
    for method in METHODS:
        curve = curves[method]
        record[method] = {
            "trial_epochs_total": len(curve),
            "trial_epochs_to_random_best": trial_epochs_to(curve, target),
            "final_best_validation": float(curve[-1]),
            "winner_unseen_test_zsl_top1": winners[method],
        }
    ours = record["tpe_asha"]["trial_epochs_to_random_best"]
    random_to_best = record["random"]["trial_epochs_to_random_best"]
    record["fraction_of_random_to_best"] = None if ours is None else ours / random_to_best
    record["fraction_of_random_total"] = (
        None if ours is None else ours / record["random"]["trial_epochs_total"]
    )
    # Equal compute: random's best after as many trial-epochs as TPE + ASHA spent in all.
    budget = min(record["tpe_asha"]["trial_epochs_total"], len(curves["random"]))
    record["random_best_at_tpe_asha_total"] = float(curves["random"][budget - 1])
    record["reseeded"] = reseeded or {}
    record["reports"] = reports
    return record


def first_rung_diagnostics(
    per_seed: list[dict[str, Any]], grace: int, reduction: int, best_so_far: bool
) -> dict[str, Any]:
    """How well ASHA's first rung predicts a trial's best, on random search's trials (they all
    run to the end): Spearman's rank correlation between the trial's best objective and, at epoch
    `grace`, the epoch's objective and the best so far (the selection so far, which ASHA compares
    when `best_so_far`); in how many seeds the trial holding random's best was in the top
    1 / `reduction` at epoch `grace` on what ASHA compares (the share ASHA lets go on); and the
    best-so-far correlation at every epoch (where a rung would predict well)."""
    from scipy import stats

    curves: list[dict[int, float]] = []
    kept = 0
    for record in per_seed:
        trials: dict[int, dict[int, float]] = {}
        for trial, epoch, value in record["reports"]["random"]:
            trials.setdefault(int(trial), {})[int(epoch)] = value
        full = {t: curve for t, curve in trials.items() if grace in curve}
        curves += list(full.values())

        compared = {
            t: max(v for e, v in curve.items() if e <= grace) if best_so_far else curve[grace]
            for t, curve in full.items()
        }
        winner = max(full, key=lambda t: max(full[t].values()))
        ranked = sorted(full, key=lambda t: -compared[t])
        kept += winner in ranked[: max(1, len(ranked) // reduction)]

    def rho(epoch: int, running: bool) -> float:
        rows = [curve for curve in curves if epoch in curve]
        if len(rows) < 3:
            return float("nan")
        at = [max(v for e, v in c.items() if e <= epoch) if running else c[epoch] for c in rows]
        return float(stats.spearmanr(at, [max(c.values()) for c in rows]).statistic)

    epochs = sorted({epoch for curve in curves for epoch in curve})
    return {
        "epoch": grace,
        "random_trials": len(curves),
        "spearman_objective_at_epoch_vs_trial_best": rho(grace, running=False),
        "spearman_best_so_far_vs_trial_best": rho(grace, running=True),
        "spearman_best_so_far_by_epoch": {epoch: rho(epoch, running=True) for epoch in epochs},
        "seeds_where_random_winner_was_in_top_share": f"{kept}/{len(per_seed)}",
    }


def reseeded_summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Each search's winner trained again with other run seeds (`reseed`), over the search
    seeds where both winners were: the search's value of the winner (its selected validation
    objective) against the re-trained mean (the gap is the winner's luck with the seed the search
    used), the re-trained validation and unseen-test means, TPE + ASHA minus random paired by
    search seed, and the noise of the objective: the standard deviation over re-trainings of one
    configuration (pooled over winners) against the spread of the selected objective over
    random's configurations (its complete trials, each trained with the search's seed)."""
    paired = [r for r in per_seed if all(m in r.get("reseeded", {}) for m in METHODS)]
    if not paired:
        return {}

    def mean_of(values: list[float]) -> float:
        return float(np.mean(values))

    summary: dict[str, Any] = {
        "seeds": len(paired),
        "run_seeds": paired[0]["reseeded"]["random"]["seeds"],
    }
    for method in METHODS:
        runs = [r["reseeded"][method] for r in paired]
        summary[method] = {
            "search_value": mean_ci([run["search_value"] for run in runs]),
            "retrained_validation": mean_ci([mean_of(run["validation"]) for run in runs]),
            "retrained_unseen_test_zsl_top1": mean_ci([mean_of(run["test"]) for run in runs]),
            "search_value_minus_retrained": mean_ci(
                [run["search_value"] - mean_of(run["validation"]) for run in runs]
            ),
        }
    for key, field in (("validation", "validation"), ("unseen_test_zsl_top1", "test")):
        summary[f"tpe_asha_minus_random_retrained_{key}"] = mean_ci(
            [
                mean_of(r["reseeded"]["tpe_asha"][field]) - mean_of(r["reseeded"]["random"][field])
                for r in paired
            ]
        )
    variances = [
        float(np.var(r["reseeded"][m]["validation"], ddof=1))
        for r in paired
        for m in METHODS
        if len(r["reseeded"][m]["validation"]) > 1
    ]
    trial_bests = []
    for r in per_seed:
        best: dict[int, float] = {}
        for trial, _, value in r["reports"]["random"]:
            best[int(trial)] = max(best.get(int(trial), -math.inf), value)
        trial_bests += list(best.values())
    at_third = [r for r in paired if all(f"{m}_at_third" in r["reseeded"] for m in METHODS)]
    if at_third:
        early = {
            m: [mean_of(r["reseeded"][f"{m}_at_third"]["validation"]) for r in at_third]
            for m in METHODS
        }
        final = [mean_of(r["reseeded"]["random"]["validation"]) for r in at_third]
        summary["at_third"] = {
            "seeds": len(at_third),
            "trial_epochs": at_third[0]["reseeded"]["random_at_third"]["trial_epochs"],
            "tpe_asha_retrained_validation": mean_ci(early["tpe_asha"]),
            "random_retrained_validation": mean_ci(early["random"]),
            "tpe_asha_minus_random_final_winner": mean_ci(
                [a - b for a, b in zip(early["tpe_asha"], final, strict=True)]
            ),
            "seeds_tpe_asha_at_least_random_final_winner": sum(
                a >= b for a, b in zip(early["tpe_asha"], final, strict=True)
            ),
        }
    summary["objective_sd_over_run_seeds"] = (
        float(math.sqrt(np.mean(variances))) if variances else float("nan")
    )
    summary["objective_sd_over_random_configurations"] = float(np.std(trial_bests, ddof=1))
    return summary


def retrained_markdown(retrained: dict[str, Any], cell: Any) -> list[str]:
    """The Markdown lines of `reseeded_summary`."""
    seeds = retrained["run_seeds"]
    lines = [
        f"Each search's winner trained again with run seeds {seeds[0]}–{seeds[-1]} (the searches "
        f"trained every trial with one seed), {retrained['seeds']} search seeds (mean ± 95 % CI):",
        "",
        "| method | winner's value in the search | re-trained: validation objective | search "
        "minus re-trained | re-trained: unseen-test ZSL top-1 |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        row = retrained[method]
        lines.append(
            f"| {LABELS[method]} | {cell(row['search_value'], 3)} "
            f"| {cell(row['retrained_validation'], 3)} "
            f"| {cell(row['search_value_minus_retrained'], 3)} "
            f"| {cell(row['retrained_unseen_test_zsl_top1'], 3)} |"
        )
    lines += [
        "",
        "TPE + ASHA minus random, paired by search seed: re-trained validation "
        f"{cell(retrained['tpe_asha_minus_random_retrained_validation'], 3)}, re-trained "
        f"unseen-test ZSL {cell(retrained['tpe_asha_minus_random_retrained_unseen_test_zsl_top1'], 3)}. "
        "Noise of the objective: standard deviation over run seeds of one configuration "
        f"{retrained['objective_sd_over_run_seeds']:.3f} (pooled over the winners), against "
        f"{retrained['objective_sd_over_random_configurations']:.3f} over random's "
        "configurations (each with the search's seed).",
    ]
    third = retrained.get("at_third")
    if third:
        lines += [
            "",
            f"After a third of random's trial-epochs ({third['trial_epochs']}), the best trial so "
            "far re-trained the same way: TPE + ASHA's "
            f"{cell(third['tpe_asha_retrained_validation'], 3)}, random's "
            f"{cell(third['random_retrained_validation'], 3)}; TPE + ASHA's minus random's final "
            f"winner (paired): {cell(third['tpe_asha_minus_random_final_winner'], 3)}, at least "
            f"as good in {third['seeds_tpe_asha_at_least_random_final_winner']}/{third['seeds']} "
            "seeds.",
        ]
    return lines


def write_report(
    per_seed: list[dict[str, Any]],
    args: argparse.Namespace,
    objective: str,
    wall: float,
    final: bool,
) -> None:
    """Summaries over the seeds finished so far: JSON, Markdown, the plot; printed when final."""
    seeds = len(per_seed)
    curves = {method: [curve_of(r["reports"][method]) for r in per_seed] for method in METHODS}

    def over_seeds(values: list[Any]) -> tuple[float, float]:
        return mean_ci([float("nan") if v is None else float(v) for v in values])

    summary: dict[str, Any] = {}
    for method in METHODS:
        summary[method] = {
            key: over_seeds([r[method][key] for r in per_seed])
            for key in (
                "trial_epochs_to_random_best",
                "final_best_validation",
                "trial_epochs_total",
                "winner_unseen_test_zsl_top1",
            )
        }
        summary[method]["seeds_reaching_random_best"] = sum(
            r[method]["trial_epochs_to_random_best"] is not None for r in per_seed
        )
    reached = summary["tpe_asha"]["seeds_reaching_random_best"]
    fraction = over_seeds([r["fraction_of_random_to_best"] for r in per_seed])
    fraction_total = over_seeds([r["fraction_of_random_total"] for r in per_seed])
    # A seed where TPE + ASHA never reached random's best counts as an infinite fraction: the
    # median and the count of seeds within the goal use every seed.
    censored = [
        math.inf if r["fraction_of_random_to_best"] is None else r["fraction_of_random_to_best"]
        for r in per_seed
    ]
    median = float(np.median(censored))
    within_goal = sum(value <= 1 / 3 for value in censored)
    # The plotted mean curves: where TPE + ASHA's first reaches random's final mean best.
    mean_curves = {method: pad(curves[method]).mean(0) for method in METHODS}
    mean_target = float(mean_curves["random"][-1])
    mean_reached = trial_epochs_to(mean_curves["tpe_asha"], mean_target)
    random_at_budget = over_seeds([r["random_best_at_tpe_asha_total"] for r in per_seed])
    gain_at_budget = over_seeds(
        [
            r["tpe_asha"]["final_best_validation"] - r["random_best_at_tpe_asha_total"]
            for r in per_seed
        ]
    )
    retrained = reseeded_summary(per_seed)
    startup = args.startup_trials
    tpe = ("multivariate " if args.multivariate else "") + "TPE"
    report = {
        "base": f"quick config, synthetic preset {args.preset}, {args.epochs} stage-2 epochs",
        "objective": objective,
        "trials_per_search": args.trials,
        "concurrent_trials": args.concurrent,
        "seeds": seeds,
        "seeds_planned": args.seeds,
        "asha": {
            "grace_period": args.grace,
            "reduction_factor": args.reduction_factor,
            "compares": args.asha_compares,
        },
        "tpe": f"Optuna {tpe} (TPESampler(seed"
        + (", multivariate=True, group=True" if args.multivariate else "")
        + f")), its first {startup} trials random",
        "random": "Optuna RandomSampler(seed), scheduler none",
        "wall_seconds": round(wall, 1),
        "settings": {key: getattr(args, key) for key in SETTINGS},
        "summary": summary,
        "goal": "TPE + ASHA reaches random's best in <= 1/3 of the trial-epochs random needs",
        # Over the seeds where TPE + ASHA reached random's best (`reached_in_seeds`).
        "tpe_asha_fraction_of_random_trial_epochs_to_random_best": fraction,
        "tpe_asha_fraction_of_random_total_trial_epochs": fraction_total,
        "tpe_asha_reached_random_best_in_seeds": f"{reached}/{seeds}",
        "random_best_validation_at_tpe_asha_total_trial_epochs": random_at_budget,
        "tpe_asha_final_best_minus_random_at_equal_trial_epochs": gain_at_budget,
        "tpe_asha_median_fraction_of_random_trial_epochs_to_random_best": (
            None if math.isinf(median) else median
        ),
        "tpe_asha_seeds_within_goal": f"{within_goal}/{seeds}",
        # Met when the median seed reaches random's best in <= 1/3 of random's trial-epochs.
        "goal_met": bool(median <= 1 / 3),
        "first_rung": first_rung_diagnostics(
            per_seed, args.grace, args.reduction_factor, args.asha_compares.startswith("selected/")
        ),
        "winners_retrained": retrained,
        "mean_curves": {
            "random_final_best": mean_target,
            "random_trial_epochs": len(mean_curves["random"]),
            "tpe_asha_trial_epochs_to_it": mean_reached,
        },
        "per_seed": per_seed,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{args.name}.json") as temporary:
        temporary.write_text(dumps(report) + "\n")
    plot(
        curves,
        out / f"{args.name}.png",
        f"{report['base']}, ASHA grace {args.grace}, reduction {args.reduction_factor}\n"
        f"{args.trials} trials, {tpe} after {startup} random, {seeds} seeds; mean and 95 % CI",
    )

    rung = report["first_rung"]

    def cell(value: tuple[float, float], digits: int) -> str:
        mean, half = value
        return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} ± {half:.{digits}f}"

    def number(value: float | None, digits: int = 0) -> str:
        return "not reached" if value is None else f"{value:.{digits}f}"

    lines = [
        f"{report['base']}, {args.trials} trials per search ({report['tpe']}), "
        f"{args.concurrent} at a time, ASHA grace {args.grace} and reduction factor "
        f"{args.reduction_factor} comparing {args.asha_compares}, {seeds} search seeds, "
        f"objective {objective} "
        "(mean ± 95 % CI over seeds)",
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
        "| seed | random's best | trial-epochs to it: TPE + ASHA / random (of random's total) "
        "| fraction of random's | fraction of random's total | final best: TPE + ASHA / random "
        "| random's best after TPE + ASHA's total | winner's test: TPE + ASHA / random |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in per_seed:
        ours, theirs = r["tpe_asha"], r["random"]
        lines.append(
            f"| {r['seed']} | {r['random_best']:.3f} "
            f"| {number(ours['trial_epochs_to_random_best'])} / "
            f"{theirs['trial_epochs_to_random_best']} ({theirs['trial_epochs_total']}) "
            f"| {number(r['fraction_of_random_to_best'], 2)} "
            f"| {number(r['fraction_of_random_total'], 2)} "
            f"| {ours['final_best_validation']:.3f} / {theirs['final_best_validation']:.3f} "
            f"| {r['random_best_at_tpe_asha_total']:.3f} "
            f"| {ours['winner_unseen_test_zsl_top1']:.3f} / "
            f"{theirs['winner_unseen_test_zsl_top1']:.3f} |"
        )
    lines += [
        "",
        "TPE + ASHA's trial-epochs to reach random's best, as a fraction of the trial-epochs "
        f"random needs to reach it: {cell(fraction, 2)}; as a fraction of random's total: "
        f"{cell(fraction_total, 2)} (over the {reached}/{seeds} seeds where TPE + ASHA reached "
        f"it); median over all seeds (not reached = ∞): "
        f"{'∞' if math.isinf(median) else f'{median:.2f}'}; seeds within ≤ 1/3: "
        f"{within_goal}/{seeds}. Goal (median ≤ 1/3): "
        f"{'met' if report['goal_met'] else 'not met'}. At equal compute "
        f"(TPE + ASHA's total trial-epochs), random's best is {cell(random_at_budget, 3)} and "
        f"TPE + ASHA's final best minus it {cell(gain_at_budget, 3)}. The mean curves (plot): "
        f"TPE + ASHA's reaches random's final mean best ({mean_target:.3f}) "
        + (
            "never"
            if mean_reached is None
            else f"after {mean_reached} of random's {len(mean_curves['random'])} trial-epochs"
        )
        + ". "
        f"ASHA's first rung (epoch {args.grace}) on random's {rung['random_trials']} trials: "
        f"Spearman ρ with the trial's best of the epoch's objective "
        f"{rung['spearman_objective_at_epoch_vs_trial_best']:.2f} and of the best so far "
        f"{rung['spearman_best_so_far_vs_trial_best']:.2f}; on what ASHA compares, random's "
        f"winner was in the top 1/{args.reduction_factor} there in "
        f"{rung['seeds_where_random_winner_was_in_top_share']} seeds. Spearman ρ of the best so "
        "far by epoch: "
        + ", ".join(
            f"{epoch} {rho:.2f}" for epoch, rho in rung["spearman_best_so_far_by_epoch"].items()
        )
        + ". "
        f"Wall time {wall / 60:.1f} min. Plot: {out / (args.name + '.png')}",
    ]
    if retrained:
        lines += ["", *retrained_markdown(retrained, cell)]
    markdown = "\n".join(lines) + "\n"
    with atomic_path(out / f"{args.name}.md") as temporary:
        temporary.write_text(markdown)
    if final:
        print(json.dumps({k: v for k, v in report.items() if k != "per_seed"}, indent=2))
        print()
        print(markdown)


if __name__ == "__main__":
    main()
