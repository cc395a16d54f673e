"""The `neuron` command.

    neuron data synth | import | info | check   datasets in the Arrow format
    neuron pretrain CONFIG [k=v ...]      stage 1 (cached, resumable)
    neuron features CONFIG [k=v ...]      stage 1 + the feature cache
    neuron train CONFIG [k=v ...]         both stages and the final evaluation

Later stages (search/, ablations/) add subcommands through the `neuron.commands` entry-point
group, so this package never imports them.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from neuron import __version__

EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_OS_ERROR = 4
EXIT_INTERRUPTED = 130


def program(name: str) -> str:
    """How to run the console script `name` of this installation from a fresh shell: the bare
    name when that one is first on PATH (the environment is active), else its full path."""
    import shutil

    installed = Path(sys.executable).parent / name
    if not installed.is_file():
        return name
    found = shutil.which(name)
    if found and Path(found).resolve() == installed.resolve():
        return name
    return str(installed.absolute())


TRAIN_EPILOG = """\
examples:
  neuron train quick
  neuron train mine.yaml        (a YAML may start with `base: quick` and override parts of it)
  neuron train quick data.path=mine.arrow data.split=custom data.unseen_classes=[Swim,Bow] \\
      data.validation_classes=[Sit] 'data.class_groups=[[Jump, Jump as high as you can]]' \\
      data.side_information.source=descriptions data.side_information.path=mine_descriptions

classes are given by name (as `neuron data info FILE` lists them) or by 0-based id;
data.validation_classes is a count (drawn with data.validation_seed) or a list; a group of
data.class_groups is wholly unseen, wholly validation or wholly training.
"""


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        default="quick",
        help="a YAML file or the name of a shipped config (quick, tiny, default, nwucla, ntu60); default: quick",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. model.spatial_prototypes=120 train.epochs=10",
    )


def _load(args: argparse.Namespace) -> Any:
    from neuron.config import load_config

    return load_config(args.config, args.overrides)


def check_name(name: str, error: type[Exception] = ValueError) -> None:
    """A run, search or study name names folders and MLflow runs: refuse anything else."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise error(
            f"--name {name!r}: use letters, digits, '.', '_' and '-' (it names folders and runs)"
        )


def check_output_file(path: str | Path | None, option: str) -> None:
    """Refuse, before any work, an output file path that is an existing folder."""
    if path is not None and Path(path).is_dir():
        raise ValueError(f"{option} {path}: this is a folder, not a file; give a file path")


def _data_synth(args: argparse.Namespace) -> int:
    from neuron.synthetic import synthetic_descriptions, write_descriptions, write_synthetic

    check_output_file(args.out, "--out")
    out = Path(args.out)
    folder = Path(args.descriptions_out or out.parent / f"{out.stem}_descriptions")
    if not args.no_descriptions and folder.exists() and not folder.is_dir():
        raise ValueError(
            f"--descriptions-out {folder}: this is a file, not a folder; give a folder path "
            "(or --no-descriptions)"
        )
    summary = write_synthetic(args.out, preset=args.preset, seed=args.seed, progress=True)
    if not args.no_descriptions:
        write_descriptions(folder, synthetic_descriptions(seed=args.seed))
        summary["descriptions"] = str(folder)
    _print_summary("synthetic dataset", summary)
    return 0


def _subject_list(text: str) -> tuple[int, ...]:
    """`--test-subjects 2,5,9` → (2, 5, 9)."""
    try:
        subjects = tuple(int(word) for word in text.replace(" ", "").split(",") if word)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated integer subject ids, e.g. 2,5,9"
        ) from None
    if not subjects:
        raise argparse.ArgumentTypeError("expected at least one subject id, e.g. 2,5,9")
    return subjects


def _data_import(args: argparse.Namespace) -> int:
    from neuron.importers import import_dataset

    check_output_file(args.out, "--out")
    summary = import_dataset(
        args.format,
        args.source,
        args.out,
        benchmark=args.benchmark,
        class_names_file=args.class_names,
        joint_map_file=args.joint_map,
        test_subjects=args.test_subjects,
        progress=True,
        strict=args.strict,
        workers=args.workers,
    )
    _print_summary(f"imported {args.format}", summary)
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from neuron.importers import dataset_summary

    summary = dataset_summary(args.file)
    if summary.get("kind") == "skeletons":
        from neuron.dataset import SkeletonTable

        # Unvalidated: info shows a faulty file's problems (in `summary`) instead of refusing it.
        table = SkeletonTable(args.file, validate=False)
        try:
            summary["subjects"] = _subjects_line(table.subject)
            classes = format_class_table(table.class_names, table.labels, table.partition)
        except (TypeError, ValueError, KeyError, IndexError) as error:
            classes = f"(no per-class table: {error}; see the problems above)"
        _print_summary(str(args.file), summary)
        print()
        print(classes)
        return 0
    _print_summary(str(args.file), summary)
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from neuron.dataset import SkeletonTable

    table = SkeletonTable(args.file, validate=False)
    print(f"{table.path}: {len(table)} rows, {table.num_classes} classes, {table.info.dataset}")
    for problem in table.problems:
        print(f"  problem: {problem.describe()}")
    if table.problems:
        print(
            f"error: {table.path}: {len(table.problems)} problem(s); fix them before training",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    print(
        "  no problems: labels, sample ids, partitions, frame/body counts, joints lengths and "
        "coordinates are valid"
    )
    return 0


def _subjects_line(subject: Any) -> str:
    """`12 (ids 1..12)`, `unknown (-1 for all 40 sequences)`, or both when some are unknown."""
    import numpy as np

    known = np.unique(subject[subject >= 0])
    unknown = int((subject < 0).sum())
    if known.size == 0:
        return f"unknown (-1 for all {unknown} sequences)"
    line = f"{known.size} (ids {known.min()}..{known.max()})"
    return line + (f"; unknown (-1) for {unknown} sequences" if unknown else "")


def format_class_table(class_names: tuple[str, ...], labels: Any, partition: Any) -> str:
    """One line per class: id, name, sequences in all, in the train and test partitions."""
    import numpy as np

    width = max([len("class"), *(len(name) for name in class_names)])
    lines = [f"{'id':>4}  {'class':<{width}}  {'sequences':>9}  {'train':>6}  {'test':>6}"]
    for index, name in enumerate(class_names):
        rows = labels == index
        train = int((rows & (partition == "train")).sum())
        test = int((rows & (partition == "test")).sum())
        flag = "" if rows.any() else "  (no sequences)"
        lines.append(
            f"{index:>4}  {name:<{width}}  {int(rows.sum()):>9}  {train:>6}  {test:>6}{flag}"
        )
    lines.append(
        f"{'':>4}  {'all':<{width}}  {len(labels):>9}  {int(np.sum(partition == 'train')):>6}  "
        f"{int(np.sum(partition == 'test')):>6}"
    )
    return "\n".join(lines)


def _print_summary(title: str, summary: dict[str, Any]) -> None:
    print(f"\n{title}")
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list) and len(value) > 8:
            value = f"{value[:8]} … ({len(value)} in all)"
        print(f"  {key:<{width}}  {value}")


def _pretrain(args: argparse.Namespace) -> int:
    from neuron.dataset import open_dataset
    from neuron.prepare import dataset_file, split_samples
    from neuron.pretrain import encoder_key, pretrain_encoder

    cfg = _load(args)
    path = dataset_file(cfg, progress=True)
    table = open_dataset(path)
    class_split, samples = split_samples(cfg, table)
    out = Path(cfg.run.cache_dir) / "encoders" / encoder_key(cfg, path, class_split)
    if (out / "encoder.pt").is_file():
        print(f"stage 1 is cached: {out / 'encoder.pt'}")
        return 0
    final = pretrain_encoder(cfg, table, class_split, samples, out, progress=True)
    print(f"stage 1 done: {final}")
    return 0


def _features(args: argparse.Namespace) -> int:
    from neuron.features import open_feature_table
    from neuron.prepare import prepare

    prepared = prepare(_load(args), progress=True)
    features = open_feature_table(prepared.feature_cache_path)
    print(
        f"feature cache: {prepared.feature_cache_path} ({len(features)} rows, "
        f"{features.nbytes() / 2**20:.1f} MiB, key {prepared.cache_key})"
    )
    return 0


def format_metrics_table(metrics: dict[str, float], classes: dict[str, Any]) -> str:
    """Validation and test ZSL/GZSL metrics side by side, plus chance."""
    rows = [
        ("ZSL top-1 (fused)", "zsl_top1"),
        ("ZSL top-1 spatial", "zsl_top1_spatial"),
        ("ZSL top-1 temporal", "zsl_top1_temporal"),
        ("GZSL seen", "gzsl_seen"),
        ("GZSL unseen", "gzsl_unseen"),
        ("GZSL harmonic mean", "gzsl_h"),
    ]
    prefixes, widths = ["val", "test"], [12, 10]
    header = f"{'metric':<22}{'validation':>12}{'test':>10}"
    if any(k.startswith("refit/test/") for k in metrics):
        # Stage 2 retrained on all seen classes for the selected epochs (eval.refit).
        prefixes.append("refit/test")
        widths.append(12)
        header += f"{'refit test':>12}"
    lines = [header, "-" * len(header)]
    for label, key in rows:
        values = [metrics.get(f"{prefix}/{key}") for prefix in prefixes]
        if all(v is None for v in values):
            continue
        cells = "".join(
            f"{'-' if v is None else f'{100 * v:.1f}':>{w}}"
            for v, w in zip(values, widths, strict=True)
        )
        lines.append(f"{label:<22}{cells}")
    if "chance/zsl" in metrics:
        lines.append(f"{'chance (ZSL)':<22}{'':>12}{100 * metrics['chance/zsl']:>10.1f}")
    parity = {k: v for k, v in metrics.items() if k.startswith("paper_parity/")}
    if parity:
        lines.append("paper_parity (the reference's optimistic protocol; not used for selection):")
        lines += [
            f"  {k}: {v:.2e}"
            if "gamma" in k
            else f"  {k}: {int(v)}"
            if k.endswith(("/epoch", "_classes"))
            else f"  {k}: {100 * v:.1f}"
            for k, v in sorted(parity.items())
        ]
    lines.append(f"best epoch (chosen on validation): {int(metrics.get('best_epoch', 0))}")
    lines.append(
        f"validation classes (pseudo-unseen): {', '.join(classes['validation_class_names'])}"
    )
    lines.append(f"unseen test classes: {', '.join(classes['unseen_class_names'])}")
    return "\n".join(lines)


def format_epoch_line(metrics: dict[str, float], selection_metric: str, epochs: int) -> str:
    """One line per stage-2 epoch: loss, the selection metric and `val/gzsl_h`, each once."""
    shown = dict.fromkeys((selection_metric, "val/gzsl_h"))  # in order, without a repeat
    values = "  ".join(f"{key} {metrics[key]:.3f}" for key in shown)
    return (
        f"epoch {int(metrics['epoch']):>3}/{epochs}  loss {metrics['train/loss']:.4f}  "
        f"{values}  ({metrics['epoch_seconds']:.1f} s)"
    )


def _train(args: argparse.Namespace) -> int:
    from neuron.atomic import write_text_atomic
    from neuron.prepare import prepare
    from neuron.train import fit, load_checkpoint

    cfg = _load(args)
    check_output_file(args.metrics_out, "--metrics-out")
    if args.name is not None:
        check_name(args.name)
        run_dir = Path(cfg.run.output_dir) / args.name
        if run_dir.is_dir() and any(run_dir.iterdir()) and not args.resume:
            # A second run would mix its config with the first one's metrics and checkpoints.
            raise ValueError(
                f"--name {args.name}: {run_dir} holds an earlier run; choose another name, "
                "remove that folder, or continue it with --resume DIR"
            )
    else:
        stamp = time.strftime("train-%Y%m%d-%H%M%S")
        run_dir = Path(cfg.run.output_dir) / stamp
        for count in itertools.count(2):
            if not run_dir.exists():
                break
            run_dir = Path(cfg.run.output_dir) / f"{stamp}-{count}"
    run_dir.mkdir(parents=True, exist_ok=True)  # an unwritable output fails before any work
    if args.resume:
        load_checkpoint(cfg, Path(args.resume))  # a bad checkpoint fails before anything is built
    prepared = prepare(cfg, progress=True)

    def report(metrics: dict[str, float], checkpoint: Path | None) -> None:
        print(format_epoch_line(metrics, cfg.eval.selection_metric, cfg.train.epochs), flush=True)

    result = fit(cfg, report, run_dir=run_dir, resume_from=args.resume, prepared=prepared)
    print()
    print(format_metrics_table(result.metrics, result.classes))
    print(f"\nrun directory: {run_dir} (config.yaml, metrics.json, checkpoints/)")
    if args.metrics_out:
        payload = result.metrics | {"classes": result.classes}
        write_text_atomic(args.metrics_out, json.dumps(payload, indent=2))
        print(f"metrics written to {args.metrics_out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuron",
        description="Neuron zero-shot skeleton action recognition: data, training and (with search/) "
        "distributed hyperparameter search.",
    )
    parser.add_argument("--version", action="version", version=f"neuron {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="create, import and inspect Arrow skeleton datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    synth = data_commands.add_parser(
        "synth", help="write the synthetic dataset and its side information"
    )
    synth.add_argument("--preset", choices=["tiny", "small", "default"], default="small")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="output file, .arrow or .parquet")
    synth.add_argument(
        "--descriptions-out",
        help="folder for the six description JSON files (default: beside --out)",
    )
    synth.add_argument(
        "--no-descriptions", action="store_true", help="do not write the description JSON files"
    )
    synth.set_defaults(handler=_data_synth)

    from neuron.benchmarks import BENCHMARKS, SOURCE_PARTITIONED_BENCHMARKS
    from neuron.importers import IMPORT_FORMATS

    importer = data_commands.add_parser(
        "import",
        help="import a dataset into the Arrow format",
        description="Import skeleton data into one Arrow/Parquet file (atomic; progress bar; summary).",
    )
    importer.add_argument("format", choices=IMPORT_FORMATS)
    importer.add_argument("source", help="folder or file in the original format")
    importer.add_argument(
        "--out", required=True, help="output file, .arrow (memory-mappable) or .parquet"
    )
    importer.add_argument(
        "--benchmark",
        choices=sorted(set(BENCHMARKS) | set(SOURCE_PARTITIONED_BENCHMARKS)),
        help="sample partition (ntu-raw needs one)",
    )
    importer.add_argument(
        "--class-names",
        help="class names, a .txt (one per line) or a JSON list (required for arrays; overrides others)",
    )
    importer.add_argument(
        "--joint-map",
        metavar="LAYOUT|FILE",
        help="arrays: source joints → the NTU 25-joint layout: kinect_v1 (20-joint Kinect v1), "
        "ntu25, or a JSON file listing one NTU joint index (or null) per source joint",
    )
    importer.add_argument(
        "--test-subjects",
        metavar="IDS",
        type=_subject_list,
        help="arrays: subject ids whose sequences are the test partition, e.g. 2,5,9 (the rest "
        "are train); needs a `subject` field in the file, replaces its `partition` field",
    )
    importer.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first malformed file instead of skipping it",
    )
    importer.add_argument(
        "--workers",
        type=int,
        default=0,
        help="ntu-raw: processes parsing .skeleton files (default 0: one per core, at most 8)",
    )
    importer.set_defaults(handler=_data_import)

    info = data_commands.add_parser("info", help="summarise a dataset file")
    info.add_argument("file")
    info.set_defaults(handler=_data_info)

    check = data_commands.add_parser(
        "check",
        help="check every row of a dataset file (labels, ids, partitions, joints, NaN/inf)",
        description="Runs the checks made whenever a dataset is opened and lists every problem "
        "with its column, first row, value and fix; exit code 2 when there are any.",
    )
    check.add_argument("file")
    check.set_defaults(handler=_data_check)

    pretrain = commands.add_parser(
        "pretrain", help="stage 1: train the Shift-GCN encoder on the training classes"
    )
    _add_config_arguments(pretrain)
    pretrain.set_defaults(handler=_pretrain)

    features = commands.add_parser(
        "features", help="stage 1 + extract the memory-mapped feature cache"
    )
    _add_config_arguments(features)
    features.set_defaults(handler=_features)

    train = commands.add_parser(
        "train",
        help="train both stages, select on validation, evaluate the unseen classes once",
        description="Runs stage 1 (cached), the feature cache (cached) and stage 2, then prints "
        "validation and test ZSL/GZSL metrics.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_arguments(train)
    train.add_argument(
        "--metrics-out", help="also write the final metrics as flat JSON to this file"
    )
    train.add_argument(
        "--resume", help="a checkpoint directory (run_dir/checkpoints/epoch-NNNN) to continue from"
    )
    train.add_argument("--name", help="run name under run.output_dir (default: train-<timestamp>)")
    train.set_defaults(handler=_train)

    for entry in entry_points(group="neuron.commands"):
        entry.load()(commands)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, also taking dotted overrides written after options (`... --name x lr=0.1`):
    argparse closes a `*` positional at the first option, so later `key=value` words are
    leftovers; they join `overrides`, and any other leftover is an error."""
    args, rest = parser.parse_known_args(argv)
    late = [word for word in rest if "=" in word and not word.startswith("-")]
    unknown = [word for word in rest if word not in late]
    if unknown or (late and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or late)}")
    if late:
        args.overrides = [*(args.overrides or []), *late]
    return args


OS_ERROR_FIXES = {
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.ENOSPC: "the disk is full; free some space or choose another location",
    errno.EDQUOT: "the disk quota is exceeded; free some space or choose another location",
    errno.EACCES: "permission denied; fix the permissions or choose another location",
    errno.EPERM: "operation not permitted; fix the permissions or choose another location",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose another path",
    errno.EEXIST: "this path is a file, not a folder; choose another path or move that file",
    errno.EISDIR: "this is a folder, not a file; give a file path",
    errno.ENOENT: "no such file or folder; check the path",
}


def describe_os_error(error: OSError) -> str:
    """One line: the path, the cause and what to do."""
    where = error.filename if error.filename is not None else "(no path given)"
    if error.filename2 is not None:
        where = f"{where} -> {error.filename2}"
    cause = error.strerror or str(error)
    fix = OS_ERROR_FIXES.get(error.errno or 0)
    return f"{where}: {cause}" + (f" ({fix})" if fix else "")


def run_handler(
    handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace
) -> int:
    """Run a command; every failure ends in one line on stderr and an exit code, never a
    traceback: bad input 2, a diverged run 3, an OS fault (read-only, full disk, a file in the
    way) 4, Ctrl-C 130; anything unexpected 1, with the full traceback written to a file that
    the line names."""
    from neuron.optim import DivergenceError

    try:
        try:
            return int(handler(args) or 0)
        except BaseException:
            _close_progress_bars()  # the error line starts on a line of its own
            raise
    except DivergenceError as error:
        print(f"error: training diverged: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(error, FileNotFoundError) else EXIT_OS_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        where = _write_traceback()
        first = (str(error).strip().splitlines() or [""])[0][:200]
        print(
            f"error: unexpected {type(error).__name__}: {first} (full traceback: {where}; "
            "please report it with that file)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


def _close_progress_bars() -> None:
    """Close the progress bars a failed command left open (tqdm keeps a set of them)."""
    tqdm_module = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm_module, "tqdm", None), "_instances", ())):
        bar.close()


def _write_traceback() -> str:
    """Write the current exception's traceback to a file in the temporary folder; its path."""
    path = Path(tempfile.gettempdir()) / (
        f"neuron-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    )
    try:
        path.write_text(traceback.format_exc())
    except OSError as error:
        return f"not written ({path}: {error.strerror})"
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv)
    return run_handler(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
