"""`neuron search`: the subcommand this package adds to the `neuron` command.

`neuron.cli` finds `register` through the `neuron.commands` entry-point group, so `neuron/` never
imports this package. Ray, Optuna and MLflow are imported only when the command runs, so
`neuron --help` stays fast. `python -m search SPEC ...` runs the same command on its own.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

from neuron.cli import EXIT_INTERRUPTED, check_name, parse_arguments, program, run_handler

EXIT_BAD_INPUT = 2
EXIT_NO_RESULT = 5

DESCRIPTION = """\
Hyperparameter search over Neuron: Ray Tune schedules the trials (on a local Ray instance, or on
the cluster at --address / $RAY_ADDRESS), Optuna TPE proposes them (define-by-run space,
search/space.py) and MLflow records every study and trial (one parent run per split, one child
run per trial). Checks the spec, the search space and the tracking store before any trial starts.
"""

EPILOG = """\
examples:
  neuron search search/specs/quick.yaml
  neuron search search/specs/quick.yaml num_trials=4 space.train.optimizer.lr.low=0.02 --name lr-sweep
  neuron search search/specs/quick.yaml num_trials=4 space.train.optimizer.lr.low=0.02 --name lr-sweep --resume
      (after a crash or Ctrl-C: the same spec and overrides, plus --resume)
  neuron search search/specs/ntu60.yaml --address auto --tracking-uri http://mlflow:5000

outputs:
  <output_dir>/<name>/<split>/best_config.yaml   the best trial's config (neuron train it)
  <output_dir>/<name>/<split>/confirm.yaml       the best trials again with new seeds (neuron ablate it)
  <output_dir>/<name>/optuna.db                  optuna-dashboard sqlite:///<that path>
  <output_dir>/mlflow.db                         mlflow ui --backend-store-uri sqlite:///<path>

exit codes: 0 done, 2 bad input (spec, override, range, tracking URI, a name in use; nothing
  launched), 4 an OS fault (read-only or full disk; the line names the path), 5 a study in
  which no trial finished with a value (every trial failed, diverged or ran out of
  time_budget_s), 130 interrupted (Ctrl-C; continue with --resume), 1 unexpected (the line
  names the file with the traceback).
"""


def register(subparsers: Any) -> None:
    """Add the `search` subcommand to the `neuron` command's subparsers."""
    parser = subparsers.add_parser(
        "search",
        help="distributed hyperparameter search (Ray Tune + Optuna, recorded in MLflow)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run_command)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="search spec YAML (see search/specs/quick.yaml)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted spec overrides, e.g. num_trials=4 max_concurrent_trials=2 "
        "space.train.optimizer.lr.low=0.01 space.train.epochs=6 base.overrides.train.batch_size=32",
    )
    parser.add_argument(
        "--name",
        help="search name: Tune run folder, Optuna study and MLflow run names "
        "(default: <spec name>-<timestamp>; required with --resume)",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store, sqlite:///path.db or http://host:port (default: the spec's "
        "tracking_uri, else sqlite:///<output_dir>/mlflow.db)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the search --name after the driver died (Tuner.restore; same Optuna "
        "study, same MLflow parent runs; finished splits are summarised again, not rerun)",
    )
    parser.add_argument(
        "--address",
        help="Ray cluster address (auto, host:6379, ray://host:10001); default: the spec's "
        "address, else $RAY_ADDRESS, else a new local Ray instance",
    )


def run_command(args: argparse.Namespace) -> int:
    """Validate everything, then run the search; bad input → message on stderr, exit code 2."""
    from neuron.config import ConfigError
    from search.runner import SearchInterrupted, SearchSetupError, run_search
    from search.spec import load_search_spec
    from search.tracking import TrackingError

    spec_path = Path(args.spec)
    if not spec_path.is_file():
        return bad_input(f"{spec_path}: no such search spec file (see search/specs/)")
    if args.resume and not args.name:
        return bad_input("--resume needs --name NAME: the name of the search to continue")
    try:
        spec = load_search_spec(spec_path, args.overrides)
        if args.tracking_uri:
            spec = spec.with_overrides({"tracking_uri": args.tracking_uri})
        if args.address:
            spec = spec.with_overrides({"address": args.address})
        name = default_name(spec_path) if args.name is None else args.name
        check_name(name, SearchSetupError)
        resume = resume_command(args, name)
        print(
            f"search {name!r}: outputs in {spec.resolved_output_dir() / name}, MLflow store "
            f"{spec.resolved_tracking_uri()}\nif interrupted, continue it with:\n  {resume}",
            flush=True,
        )
        result = run_search(spec, name, resume=args.resume)
    except (ConfigError, TrackingError, SearchSetupError) as error:
        return bad_input(str(error))
    except SearchInterrupted as error:
        print(f"interrupted: {error}\ncontinue it with:\n  {resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.summary())
    empty = [study.split for study in result.studies if study.best_trial_id is None]
    if empty:
        print(
            f"error: no trial finished with a value in {', '.join(empty)} (every trial failed, "
            "diverged or was cut by time_budget_s); the trials' reasons are in the results "
            "table and MLflow",
            file=sys.stderr,
        )
        return EXIT_NO_RESULT
    return 0


def resume_command(args: argparse.Namespace, name: str) -> str:
    """The exact command that continues this search: the same spec, overrides and options,
    with --name and --resume, runnable from a fresh shell in the same folder."""
    words = [program("neuron"), "search", args.spec, *args.overrides, "--name", name]
    if args.tracking_uri:
        words += ["--tracking-uri", args.tracking_uri]
    if args.address:
        words += ["--address", args.address]
    return shlex.join([*words, "--resume"])


def default_name(spec_path: Path) -> str:
    import time

    return f"{spec_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def bad_input(message: str) -> int:
    """`error: message` on stderr, long lines wrapped (lines of their own, such as a YAML error's
    caret under its line, stay as they are); exit code 2."""
    lines = [
        textwrap.fill(
            line,
            width=100,
            subsequent_indent="  ",
            break_long_words=False,  # paths and URIs stay whole, to copy
            break_on_hyphens=False,
        )
        if len(line) > 100
        else line
        for line in ("error: " + message).splitlines()
    ]
    print("\n".join(lines), file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    """`python -m search SPEC ...`: the same command without the `neuron` front end."""
    parser = argparse.ArgumentParser(
        prog="python -m search",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run_handler(run_command, parse_arguments(parser, argv))
