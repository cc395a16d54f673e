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


def test_data_info_lists_classes_counts_partitions_and_unknown_subjects(
    tmp_path: Path, capsys
) -> None:
    source = tmp_path / "mine.npz"
    joints = np.random.default_rng(1).normal(size=(5, 4, 1, 25, 3)).astype(np.float32)
    np.savez(
        source,
        joints=joints,
        labels=np.array([0, 0, 2, 2, 2]),
        partition=np.array(["train", "test", "train", "train", "test"]),
    )
    names = tmp_path / "classes.txt"
    names.write_text("Wave your hand\nclap\nJump\n")
    out = tmp_path / "mine.arrow"
    argv = ["data", "import", "arrays", str(source), "--out", str(out), "--class-names", str(names)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "subjects            unknown (-1 for all 5 sequences)" in text
    lines = [line.split() for line in text.splitlines()]
    assert ["id", "class", "sequences", "train", "test"] in lines
    assert ["0", "Wave", "your", "hand", "2", "1", "1"] in lines
    assert ["1", "clap", "0", "0", "0", "(no", "sequences)"] in lines
    assert ["2", "Jump", "3", "2", "1"] in lines
    assert ["all", "5", "3", "2"] in lines


def test_import_errors_name_the_flags_the_user_typed(tmp_path: Path, capsys) -> None:
    source = tmp_path / "kinect.npz"
    np.savez(source, joints=np.ones((2, 3, 1, 20, 3)), labels=[0, 1], subject=[1, 2])
    out = tmp_path / "out.arrow"
    names = tmp_path / "classes.txt"
    names.write_text("a\nb\n")
    cases = [
        ([], "arrays: --class-names FILE is required"),
        (["--class-names", str(names), "--test-subjects", "2"], "give --joint-map kinect_v1"),
        (["--class-names", str(names), "--joint-map", "kinect_v1"], "give --test-subjects"),
    ]
    for options, message in cases:
        assert main(["data", "import", "arrays", str(source), "--out", str(out), *options]) == 2
        err = capsys.readouterr().err
        assert message in err and "class_names_file" not in err and "joint_map_file" not in err
    with pytest.raises(SystemExit):
        main(["data", "import", "arrays", str(source), "--out", str(out), "--test-subjects", "x"])
    assert "expected comma-separated integer subject ids" in capsys.readouterr().err
    assert not out.exists()
    argv = ["data", "import", "arrays", str(source), "--out", str(out), "--class-names"]
    assert main([*argv, str(names), "--joint-map", "kinect_v1", "--test-subjects", "2"]) == 0


def test_config_errors_name_the_command_line_and_the_full_key(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: tiny\n")
    assert main(["train", str(mine), "model.spatial_prototype=3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'model.spatial_prototypes'?" in err and "mine.yaml" not in err
    assert main(["train", str(mine), "data.side_information=descriptions"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: command-line overrides (data.side_information=descriptions)")
    assert "data.side_information.source=descriptions" in err


def test_the_epoch_log_names_each_metric_once() -> None:
    from neuron.cli import format_epoch_line

    metrics = {"epoch": 3, "train/loss": 1.5, "val/zsl_top1": 0.5, "val/gzsl_h": 0.25}
    metrics["epoch_seconds"] = 2.0
    line = format_epoch_line(metrics, "val/gzsl_h", 10)
    assert line == "epoch   3/10  loss 1.5000  val/gzsl_h 0.250  (2.0 s)"
    line = format_epoch_line(metrics, "val/zsl_top1", 10)
    assert line == "epoch   3/10  loss 1.5000  val/zsl_top1 0.500  val/gzsl_h 0.250  (2.0 s)"


def test_printed_programs_run_from_a_fresh_shell(monkeypatch) -> None:
    import sys

    from neuron.cli import program

    installed = Path(sys.executable).parent / "neuron"
    assert installed.is_file()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the environment is not active
    assert program("neuron") == str(installed.absolute())
    monkeypatch.setenv("PATH", f"{installed.parent}:/usr/bin:/bin")  # it is
    assert program("neuron") == "neuron"


@pytest.mark.parametrize("command", ["pretrain", "features", "train"])
def test_an_override_that_is_not_yaml_exits_2_naming_it(command: str, capsys) -> None:
    assert main([command, "quick", "model.temporal_windows=[3,5"]) == 2
    err = capsys.readouterr().err
    assert "model.temporal_windows=[3,5" in err and "not valid YAML" in err
    assert "unexpected" not in err and "Traceback" not in err
