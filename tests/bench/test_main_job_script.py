"""bench/bench_main_job.py times the README's main job: it must read the commands the README
gives today (the timing is not run here; it takes minutes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "bench_main_job.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_main_job", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_runs_the_readmes_main_job_without_setup() -> None:
    script = load_script()
    steps = script.main_job_steps((ROOT / "README.md").read_text())
    assert [step[:2] for step in steps] == [
        [".venv/bin/neuron", "train"],
        [".venv/bin/neuron", "search"],
        [".venv/bin/neuron", "ablate"],
    ]
    for step in map(script.localise, steps):
        assert step[0] == str(Path(sys.executable).parent / "neuron")
        # Checkout files become absolute (the job runs in a fresh folder); outputs stay there.
        for word in step[2:]:
            if word.endswith(".yaml"):
                assert Path(word).is_absolute() and Path(word).is_file(), word
            if word.startswith("runs/"):
                assert not Path(word).is_absolute()


def test_a_readme_without_the_section_is_refused() -> None:
    with pytest.raises(ValueError, match="Two commands for a fresh machine"):
        load_script().main_job_steps("# a README\n")
