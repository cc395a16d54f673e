"""Benchmark: the README's main job after setup (train, search, ablation), step by step.

Runs exactly the commands of the README's first command block ("Two commands for a fresh
machine") except `scripts/setup.sh`, in a fresh working folder, so every step starts from
empty caches as in a new clone: the synthetic dataset is generated, the text encoded, stage 1
trained once by `neuron train` and reused by the ablation. Reported per step: wall time, the CPU
time of its processes (user, system), and what it learned (the training run's metrics, the
search's trials and best validation objective, the ablation's report rows); the load average
before and after, so that a run on a busy machine shows as one.

    .venv/bin/python bench/bench_main_job.py                     # bench/results/main_job.*

Prints JSON, then a Markdown table (both also written to --out-dir).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from neuron.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
SECTION = "## Two commands for a fresh machine"


def main_job_steps(readme: str) -> list[list[str]]:
    """The README's main-job commands after setup, as argument lists."""
    section = readme.split(SECTION, 1)
    if len(section) != 2:
        raise ValueError(f"{README}: no section {SECTION!r}")
    block = re.search(r"```bash\n(.+?)\n```", section[1], re.DOTALL)
    if block is None:
        raise ValueError(f"{README}: no bash block under {SECTION!r}")
    line = " ".join(part.rstrip("\\").strip() for part in block.group(1).splitlines())
    steps = [shlex.split(step) for step in line.split("&&")]
    return [step for step in steps if step[:2] != ["bash", "scripts/setup.sh"]]


def localise(step: list[str]) -> list[str]:
    """`.venv/bin/X` → this interpreter's X; paths of the checkout → absolute (the step runs in
    another folder); everything else (outputs under runs/) stays relative to that folder."""
    words = []
    for word in step:
        if word.startswith(".venv/bin/"):
            words.append(str(BIN / word.removeprefix(".venv/bin/")))
        elif "/" in word and not word.startswith(("-", "runs/")) and (ROOT / word).exists():
            words.append(str(ROOT / word))
        else:
            words.append(word)
    return words


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_step(step: list[str], cwd: Path, log: Path) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("w") as handle:
        completed = subprocess.run(step, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"{shlex.join(step)} failed ({completed.returncode}); see {log}")
    return {
        "command": shlex.join(step),
        "wall_seconds": round(wall, 1),
        # Children that were waited for: the step's process and what it waited for (Ray workers
        # outlive their waits and are not counted).
        "user_seconds": round(after.ru_utime - before.ru_utime, 1),
        "system_seconds": round(after.ru_stime - before.ru_stime, 1),
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def learned(step: list[str], cwd: Path) -> dict[str, Any]:
    """What a step produced, read from its own output files."""
    command = Path(step[0]).name, step[1]
    if command == ("neuron", "train") and "--metrics-out" in step:
        metrics = json.loads((cwd / step[step.index("--metrics-out") + 1]).read_text())
        keep = ("test/zsl_top1", "test/gzsl_seen", "test/gzsl_unseen", "test/gzsl_h", "chance/zsl")
        return {key: metrics[key] for key in keep if key in metrics}
    if command == ("neuron", "search"):
        tables = sorted(cwd.glob("runs/search/*/*/results.csv"))
        studies = {}
        for table in tables:
            rows = read_csv(table)
            completed = [float(r["objective"]) for r in rows if r["status"] == "completed"]
            completed = [value for value in completed if not math.isnan(value)]
            studies[str(table.parent.relative_to(cwd))] = {
                "trials": len(rows),
                "completed": sum(r["status"] == "completed" for r in rows),
                "best_completed_objective": max(completed) if completed else None,
            }
        return {"studies": studies}
    if command == ("neuron", "ablate"):
        reports = sorted(cwd.glob("runs/ablate/*/report.csv"))
        return {str(r.parent.relative_to(cwd)): read_csv(r) for r in reports}
    return {}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"README main job after setup, {report['machine']['cpus']} CPUs "
        f"({report['machine']['cpu_model']}), load average before {report['load_before']}, "
        f"after {report['load_after']}, commit {report['commit']}",
        "",
        "| step | wall | user CPU | system CPU |",
        "|---|---|---|---|",
    ]
    for step in report["steps"]:
        lines.append(
            f"| `{step['command'].replace(str(BIN) + '/', '')}` | {step['wall_seconds']:.1f} s | "
            f"{step['user_seconds']:.1f} s | {step['system_seconds']:.1f} s |"
        )
    total = report["total_wall_seconds"]
    lines += ["", f"Total: {total:.1f} s ({int(total // 60)} min {total % 60:.0f} s)."]
    for step in report["steps"]:
        if step["learned"]:
            lines.append(f"- {step['command'].split()[1]}: `{json.dumps(step['learned'])[:600]}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--name", default="main_job")
    parser.add_argument("--workdir", help="run here (default: a new temporary folder, kept)")
    args = parser.parse_args()
    steps = [localise(step) for step in main_job_steps(README.read_text())]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="neuron-main-job-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = []
    for index, step in enumerate(steps):
        print(f"[{index + 1}/{len(steps)}] {shlex.join(step)}", flush=True)
        outcome = run_step(step, workdir, workdir / f"step-{index + 1}.log")
        outcome["learned"] = learned(step, workdir)
        print(f"    {outcome['wall_seconds']:.1f} s", flush=True)
        results.append(outcome)
    report = {
        "commit": commit or "unknown",
        "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model()},
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "workdir": str(workdir),
        "steps": results,
        "total_wall_seconds": round(sum(s["wall_seconds"] for s in results), 1),
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    write_text_atomic(out / f"{args.name}.json", text + "\n")
    write_text_atomic(out / f"{args.name}.md", markdown(report))
    print(text)
    print(markdown(report))


if __name__ == "__main__":
    main()
