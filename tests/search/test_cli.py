"""`neuron search`: the subcommand is found through the entry point; bad input exits 2 early."""

from __future__ import annotations

import socket

import pytest
import ray

from neuron.cli import main
from tests.search.helpers import SPECS


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_the_subcommand_and_its_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--name", "--tracking-uri", "--resume", "--address", "KEY=VALUE", "mlflow ui"):
        assert option in text


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.yaml"], "missing.yaml: no such search spec file"),
        ([str(SPECS / "tiny.yaml"), "num_trails=2"], "did you mean 'num_trials'"),
        (
            [str(SPECS / "tiny.yaml"), "space.train.optimizer.lr.low=5.0"],
            "space.train.optimizer.lr: low=5.0 >= high=0.5",
        ),
        ([str(SPECS / "tiny.yaml"), "objective.metric=test/gzsl_h"], "test metrics"),
        ([str(SPECS / "tiny.yaml"), "--resume"], "--resume needs --name"),
        ([str(SPECS / "tiny.yaml"), "--tracking-uri", "./mlruns"], "MLflow 3 refuses file stores"),
    ],
)
def test_bad_input_is_a_clear_message_and_exit_code_2(
    tmp_path, monkeypatch, capsys, arguments, message
):
    monkeypatch.chdir(tmp_path)
    spec, *rest = arguments
    code, out, err = run(["search", spec, f"output_dir={tmp_path / 'out'}", *rest], capsys)
    assert code == 2
    assert message in " ".join(err.split())
    assert err.startswith("error: ")
    assert not (tmp_path / "out").exists()  # nothing launched, nothing written
    assert not ray.is_initialized()


def test_an_unreachable_tracking_server_fails_before_launching(tmp_path, capsys):
    uri = f"http://127.0.0.1:{closed_port()}"
    code, _, err = run(
        [
            "search",
            str(SPECS / "tiny.yaml"),
            f"output_dir={tmp_path / 'out'}",
            "--tracking-uri",
            uri,
            "--name",
            "x",
        ],
        capsys,
    )
    assert code == 2
    assert f"no MLflow server answers at {uri}/health" in " ".join(err.split())
    assert not (tmp_path / "out" / "x").exists()
    assert not ray.is_initialized()


def test_the_resume_command_repeats_the_spec_overrides_and_options(monkeypatch):
    import argparse
    import shlex

    from search.cli import add_arguments, resume_command

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["my spec.yaml", "num_trials=4", "space.lr.low=0.02", "--tracking-uri", "sqlite:///m.db"]
    args = parser.parse_args(argv)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a fresh shell: the environment is not active
    words = shlex.split(resume_command(args, "lr-sweep"))
    assert words[0].endswith("/bin/neuron") and words[1:] == [
        "search", "my spec.yaml", "num_trials=4", "space.lr.low=0.02", "--name", "lr-sweep",
        "--tracking-uri", "sqlite:///m.db", "--resume",
    ]  # fmt: skip
    resumed = parser.parse_args(words[2:])  # the printed command parses to the same search
    assert (resumed.spec, resumed.overrides, resumed.tracking_uri, resumed.resume) == (
        "my spec.yaml",
        ["num_trials=4", "space.lr.low=0.02"],
        "sqlite:///m.db",
        True,
    )


def test_an_interrupted_search_prints_the_exact_command_to_continue(tmp_path, monkeypatch, capsys):
    import search.runner
    from search.runner import SearchInterrupted

    def interrupted(spec, name, resume=False):
        raise SearchInterrupted(f"search {name!r} was interrupted in split s")

    monkeypatch.setattr(search.runner, "run_search", interrupted)
    argv = [
        "search", str(SPECS / "tiny.yaml"), f"output_dir={tmp_path / 'out'}", "num_trials=3",
        "--name", "n1",
    ]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 130
    command = err.split("continue it with:\n", 1)[1].strip()
    assert command.endswith(
        f"search {SPECS / 'tiny.yaml'} output_dir={tmp_path / 'out'} num_trials=3 --name n1 --resume"
    )
    assert command in out  # also printed at the start, before anything runs


@pytest.mark.parametrize("name", ["a/b", "..", ""])
def test_a_bad_name_is_refused_before_anything_is_printed_or_started(tmp_path, capsys, name):
    code, out, err = run(
        ["search", str(SPECS / "tiny.yaml"), f"output_dir={tmp_path / 'out'}", "--name", name],
        capsys,
    )
    assert code == 2
    assert f"--name {name!r}: use letters, digits" in err
    assert "continue it with" not in out  # no resume hint for a name that cannot exist
    assert not (tmp_path / "out").exists()
    assert not ray.is_initialized()


def test_a_spec_yaml_error_keeps_the_caret_under_its_line(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("num_trials: [3\n")
    code, _, err = run(["search", str(spec)], capsys)
    assert code == 2
    lines = err.splitlines()
    caret = next(line for line in lines if line.strip() == "^")
    assert lines[lines.index(caret) - 1].strip().startswith("num_trials: [3")
