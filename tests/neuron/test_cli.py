"""The `neuron` command: every subcommand's --help, data synth/import/info, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neuron.cli import build_parser, main, parse_arguments
from neuron.dataset import open_dataset


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["data"],
        ["data", "synth"],
        ["data", "import"],
        ["data", "info"],
        ["pretrain"],
        ["features"],
        ["train"],
    ],
)
def test_every_subcommand_has_help(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: neuron" in capsys.readouterr().out


def test_search_is_registered_through_the_entry_point(tmp_path: Path, capsys) -> None:
    # `neuron search` reaches search/'s handler through the entry point (neuron/ never imports
    # it); a bad spec comes back as a clear error and exit code 2, before Ray starts.
    spec = tmp_path / "spec.yaml"
    spec.write_text("num_trails: 3\n")
    assert main(["search", str(spec)]) == 2
    error = " ".join(capsys.readouterr().err.split())  # the message is wrapped at 100 columns
    assert "spec.yaml: unknown key num_trails: did you mean 'num_trials'?" in error


def test_overrides_may_follow_options(capsys) -> None:
    parser = build_parser()
    args = parse_arguments(
        parser,
        ["train", "tiny", "train.optimizer.lr=0.5", "--name", "x", "train.epochs=2", "run.seed=3"],
    )
    assert args.overrides == ["train.optimizer.lr=0.5", "train.epochs=2", "run.seed=3"]
    assert args.name == "x"
    search = parse_arguments(parser, ["search", "s.yaml", "--name", "n", "num_trials=2"])
    assert search.overrides == ["num_trials=2"] and search.name == "n"
    for argv in (["train", "tiny", "--name", "x", "stray"], ["data", "info", "d.arrow", "a=1"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_arguments(parser, argv)
        assert exit_info.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


def test_data_synth_then_info(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synthetic.arrow"
    assert main(["data", "synth", "--preset", "tiny", "--out", str(out)]) == 0
    table = open_dataset(out)
    assert table.num_classes == 20 and len(table) > 0
    descriptions = tmp_path / "synthetic_descriptions"
    assert len(json.loads((descriptions / "spatial_fg.json").read_text())) == 20
    assert main(["data", "info", str(out)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["sequences", str(len(table))] in lines


def test_data_import_arrays_through_the_command(tmp_path: Path) -> None:
    source = tmp_path / "mine.npz"
    generator = np.random.default_rng(0)
    joints = generator.normal(size=(6, 10, 1, 25, 3)).astype(np.float32)  # (N, T, M, V, 3)
    np.savez(
        source,
        joints=joints,
        labels=np.array([0, 1, 0, 1, 0, 1]),
        partition=np.array(["train", "train", "train", "test", "test", "test"]),
    )
    names = tmp_path / "classes.txt"
    names.write_text("wave\nclap\n")
    out = tmp_path / "mine.arrow"
    code = main(
        ["data", "import", "arrays", str(source), "--out", str(out), "--class-names", str(names)]
    )
    assert code == 0
    table = open_dataset(out)
    assert table.class_names == ("wave", "clap")
    np.testing.assert_allclose(table.sequence(3), joints[3])


def test_import_of_a_missing_source_fails_cleanly(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.arrow"
    code = main(["data", "import", "nw-ucla", str(tmp_path / "nowhere"), "--out", str(out)])
    assert code == 2
    assert "nowhere" in capsys.readouterr().err
    assert not out.exists()
