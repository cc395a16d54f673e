"""bench/gpu.py, the CUDA benchmark, checked end to end on the CPU (`--device cpu --dry-run`):
every path it times runs (reference-style encoder epochs, cache epochs, trials sharing the
device in spawned processes) and it prints its JSON and Markdown. Speed is not checked."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_the_dry_run_times_every_path_and_prints_json_and_markdown():
    before = set(Path(tempfile.gettempdir()).glob("bench-gpu-*"))
    done = run("--device", "cpu", "--dry-run", "--trials", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    text, _, table = done.stdout.partition("\n\n| quantity | value |")
    report = json.loads(text[text.index("{") :])
    assert report["device"] == "cpu" and report["dry_run"] is True
    assert report["train_samples"] > 0 and report["trial_epochs"] == 1
    for key in (
        "reference_fp32_encoder_samples_per_s",
        "cache_bf16_samples_per_s",
        "cache_bf16_batch1024_samples_per_s",
        "epoch_ratio_reference_over_cache",
        "head_tflops_achieved",
        "trials_per_gpu_hour_alone",
        "trials_per_gpu_hour_2_sharing",
    ):
        assert report[key] > 0, key
    assert report["head_fraction_of_peak"] is None  # no bf16 peak is known for a CPU
    assert f"| trials_per_gpu_hour_2_sharing | {report['trials_per_gpu_hour_2_sharing']} |" in table
    assert (
        set(Path(tempfile.gettempdir()).glob("bench-gpu-*")) <= before
    )  # its dataset and caches are removed


def test_without_cuda_it_says_how_to_check_the_script_on_a_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    done = run()
    assert done.returncode == 2
    assert "needs a CUDA device and none is visible; use --device cpu --dry-run" in done.stderr
    assert "Traceback" not in done.stderr
