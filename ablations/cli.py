"""`neuron ablate`: the subcommand this package adds to the `neuron` command.

    neuron ablate SPEC.yaml [k=v …] [--name NAME] [--tracking-uri URI] [--resume] [--address A]
    neuron ablate report NAME_OR_RUN_ID [--tracking-uri URI] [--experiment E] [--out DIR]
    neuron ablate list [--tracking-uri URI] [--experiment E]

`neuron.cli` finds `register` through the `neuron.commands` entry-point group. Ray, MLflow and
the study machinery are imported only when the command runs. `python -m ablations ...` runs the
same command on its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ablations.spec import DEFAULT_EXPERIMENT
from neuron.cli import check_name, parse_arguments, run_handler
from search.cli import bad_input

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
DEFAULT_STORE = "sqlite:///runs/ablate/mlflow.db"

DESCRIPTION = """\
Ablation studies of Neuron: named variants (dotted overrides of a base config, or of the best
trial of a finished search) × splits × seeds, every run scheduled by Ray Tune (local Ray, or the
cluster at --address / $RAY_ADDRESS) and recorded in MLflow (one parent run per study, one child
run per variant, split and seed). Variants that only change stage 2 share one stage-1 encoder and
feature cache. The report gives mean ± 95 % CI over seeds and paired tests against the full
model (Holm-corrected). Everything is validated before the first run starts.

  neuron ablate SPEC.yaml [k=v ...]   run (or --resume) a study
  neuron ablate report NAME_OR_RUN_ID rebuild a study's report from MLflow alone
  neuron ablate list                  the studies in a store
"""

EPILOG = """\
examples:
  neuron ablate ablations/specs/synthetic_components.yaml
  neuron ablate ablations/specs/synthetic_components.yaml seeds=[0,1] --name comp
  neuron ablate ablations/specs/synthetic_components.yaml seeds=[0,1] --name comp --resume
  neuron ablate ablations/specs/neuron_components.yaml --address auto --tracking-uri http://mlflow:5000
  neuron ablate report comp --out report-comp
  neuron ablate list

outputs:
  <output_dir>/<name>/report.md, report.csv, <split>.png   the report (also on the parent run)
  <output_dir>/mlflow.db             mlflow ui --backend-store-uri sqlite:///<path>

exit codes: 0 done, 2 bad input (spec, variant, override, tracking URI; nothing launched),
  130 interrupted (Ctrl-C; continue with --resume).
"""


def register(subparsers: Any) -> None:
    """Add the `ablate` subcommand to the `neuron` command's subparsers."""
    parser = subparsers.add_parser(
        "ablate",
        help="ablation studies: variants × splits × seeds with confidence intervals and tests",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run_command)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec", metavar="SPEC|report|list", help="ablation spec YAML, or `report`, or `list`"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted spec overrides, e.g. seeds=[0,1,2] base.overrides.train.epochs=6 "
        "max_concurrent_trials=2; after `report`: the study's name or parent run id",
    )
    parser.add_argument(
        "--name", help="study name (default: <spec name>-<timestamp>; required with --resume)"
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store, sqlite:///path.db or http://host:port (default: the spec's "
        f"tracking_uri, else sqlite:///<output_dir>/mlflow.db; report/list: {DEFAULT_STORE})",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the study --name after the driver died (Tuner.restore; the same MLflow "
        "runs, no duplicates)",
    )
    parser.add_argument(
        "--address",
        help="Ray cluster address (auto, host:6379, ray://host:10001); default: the spec's "
        "address, else $RAY_ADDRESS, else a new local Ray instance",
    )
    parser.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"report/list: the MLflow experiment (default {DEFAULT_EXPERIMENT})",
    )
    parser.add_argument(
        "--out",
        help="report: folder for report.md, report.csv and the PNGs (default ./<name>-report)",
    )


def run_command(args: argparse.Namespace) -> int:
    from neuron.config import ConfigError
    from search.tracking import TrackingError

    try:
        if args.spec == "report":
            return _report(args)
        if args.spec == "list":
            return _list(args)
        return _run(args)
    except (ConfigError, TrackingError, ValueError) as error:
        return bad_input(str(error))


def _run(args: argparse.Namespace) -> int:
    from ablations.runner import (
        AblationInterrupted,
        AblationSetupError,
        describe_plan,
        plan_study,
        run_ablation,
    )
    from ablations.spec import load_ablation_spec

    spec_path = Path(args.spec)
    if not spec_path.is_file():
        return bad_input(
            f"{spec_path}: no such ablation spec file (see ablations/specs/), and not "
            "`report` or `list`"
        )
    if args.resume and not args.name:
        return bad_input("--resume needs --name NAME: the name of the study to continue")
    spec = load_ablation_spec(spec_path, args.overrides)
    if args.tracking_uri:
        spec = spec.with_overrides({"tracking_uri": args.tracking_uri})
    if args.address:
        spec = spec.with_overrides({"address": args.address})
    plan = plan_study(spec)
    name = f"{spec_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}" if args.name is None else args.name
    check_name(name, AblationSetupError)
    print(
        f"ablation study {name!r}: outputs in {spec.resolved_output_dir() / name}, MLflow store "
        f"{spec.resolved_tracking_uri()}; if interrupted, continue with --name {name} --resume\n"
        + describe_plan(plan),
        flush=True,
    )
    try:
        result = run_ablation(plan, name, resume=args.resume)
    except AblationInterrupted as error:
        print(f"interrupted: {str(error).replace('SPEC', str(spec_path))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.summary())
    return 0


def _existing_store(args: argparse.Namespace) -> str:
    """The store `report` and `list` read: they never create one (an SQLite file that does
    not exist means the wrong path, not an empty store)."""
    uri = args.tracking_uri or DEFAULT_STORE
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ValueError(
                f"no MLflow store at {path} (tracking URI {uri}); pass --tracking-uri with the "
                "store the study wrote to (its summary printed it)"
            )
    return uri


def _report(args: argparse.Namespace) -> int:
    from ablations.report import build_report, find_root, write_report
    from search.tracking import MlflowTracker, check_tracking_uri

    if len(args.overrides) != 1:
        return bad_input("report needs exactly one study: neuron ablate report NAME_OR_RUN_ID")
    uri = _existing_store(args)
    check_tracking_uri(uri)
    tracker = MlflowTracker(uri, args.experiment)
    root = find_root(tracker, args.overrides[0])
    report = build_report(tracker, root.info.run_id)
    folder = Path(args.out or f"{report.name}-report")
    files = write_report(report, folder)
    print(report.text())
    print("written: " + ", ".join(str(f) for f in files))
    return 0


def _list(args: argparse.Namespace) -> int:
    from ablations.tracking import ROLE_STUDY, ROLE_TOP, TAG_ABLATION
    from search.tracking import PARENT_RUN_ID, TAG_ROLE, MlflowTracker, check_tracking_uri

    uri = _existing_store(args)
    check_tracking_uri(uri)
    tracker = MlflowTracker(uri, args.experiment)
    runs = [
        run
        for role in (ROLE_TOP, ROLE_STUDY)
        for run in tracker.client.search_runs(
            [tracker.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = '{role}'"
        )
    ]
    roots = sorted(
        (
            r
            for r in runs
            if r.data.tags.get(TAG_ROLE) == ROLE_TOP or PARENT_RUN_ID not in r.data.tags
        ),
        key=lambda r: -r.info.start_time,
    )
    if not roots:
        print(f"no ablation studies in experiment {args.experiment!r} at {uri}")
        return 0
    print(f"{'name':32} {'status':10} {'started':17} {'runs':>9}  run id")
    for run in roots:
        tags = run.data.tags
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
        done = f"{tags.get('neuron.runs_completed', '?')}"
        print(
            f"{tags.get(TAG_ABLATION, run.info.run_name):32} {run.info.status:10} {started:17} "
            f"{done:>9}  {run.info.run_id}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m ablations ...`: the same command without the `neuron` front end."""
    parser = argparse.ArgumentParser(
        prog="python -m ablations",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run_handler(run_command, parse_arguments(parser, argv))
