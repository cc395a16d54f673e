"""The README's walk-through for a user's own data ("Your own skeleton data"), run as written on a
small generated 20-joint Kinect v1 dataset: its Python block packs per-sequence `.npy` files into
the `arrays` `.npz`, its commands import (`--joint-map kinect_v1 --test-subjects 2`) and
describe the data, its YAML (with `base: quick` swapped for `base: tiny` to take seconds) names
unseen, validation and grouped classes by name, and `neuron train` trains and evaluates."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuron.cli import program

README = Path(__file__).resolve().parents[2] / "README.md"
CLASSES = ("Wave", "Clap", "Jump", "Jump as high as you can", "Kick", "Sit", "Swim", "Bow")
ROUNDS = ("spatial_cg", "spatial_mg", "spatial_fg", "temporal_fp", "temporal_sp", "temporal_tp")


def section_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the README's own-data section, in order."""
    text = README.read_text()
    section = text.split("## Your own skeleton data", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def write_user_files(folder: Path) -> None:
    """What a user has on disk: one (T, 20, 3) `.npy` per sequence, classes.txt, descriptions."""
    rng = np.random.default_rng(0)
    data = folder / "mydata"
    data.mkdir()
    rest = rng.normal(scale=0.3, size=(20, 3))  # a stand-in rest pose
    for action, _ in enumerate(CLASSES, start=1):
        moving = rng.choice(20, size=4, replace=False)  # the joints this action moves
        for subject in (1, 2, 3):
            for take in (1, 2, 3):
                frames = int(rng.integers(20, 40))
                phase = np.linspace(0, 2 * np.pi * (1 + action / 4), frames)[:, None]
                joints = np.repeat(rest[None], frames, axis=0)  # (T, 20, 3)
                joints[:, moving, 1] += 0.2 * np.sin(phase)
                joints += rng.normal(scale=0.01, size=joints.shape)
                np.save(data / f"a{action:02d}_s{subject:02d}_e{take:02d}.npy", joints)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    descriptions = folder / "mydata_descriptions"
    descriptions.mkdir()
    for round_name in ROUNDS:
        texts = {name: [f"{name}: {round_name} view", f"a person does {name}"] for name in CLASSES}
        (descriptions / f"{round_name}.json").write_text(json.dumps(texts))


def run_line(line: str, folder: Path) -> subprocess.CompletedProcess[str]:
    words = shlex.split(line)
    assert words[0] == "neuron", line
    completed = subprocess.run(
        [program("neuron"), *words[1:]],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, (
        f"{line}\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}"
    )
    return completed


@pytest.mark.slow
def test_the_readme_walk_through_for_own_data_runs_as_written(tmp_path: Path) -> None:
    write_user_files(tmp_path)
    blocks = section_blocks()
    assert [language for language, _ in blocks] == ["python", "bash", "yaml", "bash"]
    (_, pack), (_, import_lines), (_, config), (_, train_lines) = blocks

    subprocess.run([sys.executable, "-c", pack], cwd=tmp_path, check=True, timeout=120)
    with np.load(tmp_path / "mydata.npz", allow_pickle=False) as packed:
        assert packed["joints"].shape[1:] == (1, 20, 3)
        assert len(packed["lengths"]) == len(CLASSES) * 9

    outputs = [run_line(line, tmp_path).stdout for line in import_lines.strip().splitlines()]
    info = outputs[1]
    assert re.search(r"subjects\s+3 \(ids 1\.\.3\)", info), info
    for index, name in enumerate(CLASSES):  # 9 sequences per class: 6 train, 3 test (subject 2)
        assert re.search(rf"^\s*{index}\s+{re.escape(name)}\s+9\s+6\s+3$", info, re.M), info

    name_line, *yaml_lines = config.splitlines()
    assert name_line == "# mydata.yaml" and "base: quick" in yaml_lines
    (tmp_path / "mydata.yaml").write_text(
        "\n".join(yaml_lines).replace("base: quick", "base: tiny") + "\n"
    )
    (train_line,) = train_lines.strip().splitlines()
    trained = run_line(train_line + " run.cache_dir=cache run.output_dir=runs", tmp_path)
    assert "validation classes (pseudo-unseen): Sit" in trained.stdout
    assert "unseen test classes: Swim, Bow" in trained.stdout
    metrics = json.loads((tmp_path / "mydata-metrics.json").read_text())
    assert metrics["classes"]["unseen_class_names"] == ["Swim", "Bow"]
    assert metrics["classes"]["validation_class_names"] == ["Sit"]
    assert 0.0 <= metrics["test/zsl_top1"] <= 1.0 and metrics["chance/zsl"] == 0.5
