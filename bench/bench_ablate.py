"""Benchmark: an ablation study through `neuron ablate` vs the same runs as `neuron train` calls.

Both arms start from an empty cache folder of their own (the synthetic dataset is generated and
the text encoded in each) and run the cells of the same plan:

- `neuron ablate SPEC [overrides]`: one process; stage 1 (encoder + feature cache) once per
  distinct stage-1 config, shared by every variant and seed; `max_concurrent_trials` runs at
  once on local Ray, each with `resources.cpu` threads; MLflow recording and the report
  included;
- sequential: one `neuron train CONFIG` process per cell, where CONFIG is the cell's resolved
  config (`run.seed` = the cell's seed, so stage 1 is trained once per seed: `neuron train` has
  one seed for both stages) with `run.threads` = all the CPUs the ablate arm uses.

Reported: wall time of each arm, their ratio, and the encoders each arm trained.

    python bench/bench_ablate.py                                   # the synthetic component study
    python bench/bench_ablate.py --out /tmp/bench seeds=[0,1] base.overrides.train.epochs=4

Prints JSON, then a Markdown table (also written to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ablations.spec import build_plan, load_ablation_spec
from neuron.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "ablations" / "specs" / "synthetic_components.yaml"
NEURON = Path(sys.executable).parent / "neuron"


def run(command: list[str], cwd: Path, log: Path) -> float:
    started = time.perf_counter()
    with log.open("a") as handle:
        completed = subprocess.run(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({completed.returncode}); see {log}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default=str(SPEC))
    parser.add_argument("--out", default="runs/bench-ablate")
    parser.add_argument("overrides", nargs="*", help="dotted spec overrides for both arms")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    args.spec = str(Path(args.spec).resolve())
    shutil.rmtree(out, ignore_errors=True)
    (out / "ablate").mkdir(parents=True)
    (out / "train").mkdir(parents=True)
    log = out / "log.txt"

    ablate_overrides = [
        *args.overrides,
        f"output_dir={out / 'ablate'}",
        f"base.overrides.run.cache_dir={out / 'ablate' / 'cache'}",
    ]
    plan = build_plan(load_ablation_spec(args.spec, ablate_overrides))
    spec = plan.spec
    threads = max(1, int(spec.resources.cpu)) * spec.max_concurrent_trials

    ablate_s = run(
        [str(NEURON), "ablate", args.spec, *ablate_overrides, "--name", "bench"],
        out / "ablate",
        log,
    )
    train_cache = out / "train" / "cache"
    configs = []
    for index, cell in enumerate(plan.cells):
        config = plan.config(cell).replace(
            {
                "run.cache_dir": str(train_cache),
                "run.output_dir": str(out / "train" / "runs" / str(index)),
                "run.threads": threads,
            }
        )
        path = out / "train" / f"cell-{index:03d}.yaml"
        write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
        configs.append(path)
    started = time.perf_counter()
    for path in configs:
        run([str(NEURON), "train", str(path)], out / "train", log)
    train_s = time.perf_counter() - started

    def encoders(cache: Path) -> int:
        return len(list(cache.glob("encoders/*/encoder.pt")))

    result: dict[str, Any] = {
        "spec": str(args.spec),
        "overrides": args.overrides,
        "runs": len(plan.cells),
        "variants": [v.name for v in plan.variants],
        "seeds": list(spec.seeds),
        "max_concurrent_trials": spec.max_concurrent_trials,
        "cpu_per_run": spec.resources.cpu,
        "sequential_threads": threads,
        "ablate_s": round(ablate_s, 1),
        "sequential_train_s": round(train_s, 1),
        "speedup": round(train_s / ablate_s, 2),
        "encoders_trained_ablate": encoders(out / "ablate" / "cache"),
        "encoders_trained_sequential": encoders(train_cache),
        "cpu_count": os.cpu_count(),
    }
    markdown = "\n".join(
        [
            "| arm | runs | encoders trained | wall time |",
            "|---|---:|---:|---:|",
            f"| `neuron ablate` ({spec.max_concurrent_trials} at once × {spec.resources.cpu:g} "
            f"CPU) | {result['runs']} | {result['encoders_trained_ablate']} | {ablate_s:.0f} s |",
            f"| sequential `neuron train` ({threads} threads) | {result['runs']} | "
            f"{result['encoders_trained_sequential']} | {train_s:.0f} s |",
            f"| ratio (sequential / ablate) | | | **{result['speedup']}×** |",
        ]
    )
    write_text_atomic(out / "bench_ablate.json", json.dumps(result, indent=2))
    write_text_atomic(out / "bench_ablate.md", markdown + "\n")
    print(json.dumps(result, indent=2))
    print(markdown)


if __name__ == "__main__":
    main()
