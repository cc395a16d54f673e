"""The tiny config end to end (stage 1, feature cache, stage 2, selection, the final test
evaluation) against numbers recorded before a refactor: `pinned/tiny_run.json`.

What the numbers are: `neuron train tiny` with `run.seed=0` on CPU, recorded before the
restructuring of neuron/train.py into one module per stage: the stage-1 selection record, every
per-epoch report except `epoch_seconds`, and the final metrics. The tiny config learns nothing
(every accuracy is at chance and the losses stay near ln 13 for 13 training classes), so this
test guards the plumbing (data, split, initialisation, optimiser, batch order, selection,
calibration), not the science; tests/neuron/test_train.py checks that stage 2 learns.

Accuracies, epochs and class lists are ratios of counts and are compared exactly. Continuous
values come from float arithmetic: running stage 1 on 2 threads instead of 1 (a pure float
reassociation) moved the losses by < 2e-6 and the calibrated GZSL γ by < 1e-3 relative, so
losses and the learning rate are compared with a relative tolerance of 1e-4 and γ (a gap
between nearly equal scores, hence sensitive) with 1e-2. A faster encoder with the same maths
stays within these; a change to the data, split, initialisation, optimiser or batch order
moves the losses far beyond them.

Re-record deliberately (`python -m tests.neuron.test_pinned_run`), and say in the commit why
the numbers moved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from neuron.config import load_config
from neuron.prepare import prepare
from neuron.train import fit

PINNED = Path(__file__).parent / "pinned" / "tiny_run.json"
RELATIVE_TOLERANCE = {"train/loss": 1e-4, "lr": 1e-4, "gzsl_gamma": 1e-2}
"""Keys (by suffix) whose values come from float arithmetic rather than from counts."""


def run_tiny(cache_dir: Path, run_dir: Path) -> dict[str, Any]:
    """The record that `pinned/tiny_run.json` holds, computed now."""
    cfg = load_config("tiny", {"run.cache_dir": str(cache_dir), "run.seed": 0})
    prepared = prepare(cfg, progress=False)
    encoder = torch.load(prepared.encoder_checkpoint, map_location="cpu", weights_only=True)
    reports: list[dict[str, float]] = []

    def report(metrics: dict[str, float], checkpoint: Path | None) -> None:
        reports.append({k: v for k, v in metrics.items() if k != "epoch_seconds"})

    result = fit(cfg, report, run_dir=run_dir, prepared=prepared)
    split = prepared.class_split
    return {
        "encoder": {
            "selected_epoch": encoder["selected_epoch"],
            "heldout_accuracy": encoder["heldout_accuracy"],
        },
        "class_split": {
            "training": list(split.training),
            "validation": list(split.validation),
            "unseen": list(split.unseen),
        },
        "best_epoch": result.best_epoch,
        "reports": reports,
        "final": result.metrics,
    }


def _assert_metrics_equal(now: dict[str, float], pinned: dict[str, float], where: str) -> None:
    assert sorted(now) == sorted(pinned), f"{where}: metric names changed"
    for key, expected in pinned.items():
        tolerance = next((t for k, t in RELATIVE_TOLERANCE.items() if key.endswith(k)), None)
        if tolerance is None:
            assert now[key] == expected, f"{where}: {key}"
        else:
            assert now[key] == pytest.approx(expected, rel=tolerance), f"{where}: {key}"


@pytest.mark.slow
def test_the_tiny_run_reproduces_the_pinned_numbers(tmp_path: Path) -> None:
    pinned = json.loads(PINNED.read_text())
    now = run_tiny(tmp_path / "cache", tmp_path / "run")
    assert now["class_split"] == pinned["class_split"]
    assert now["encoder"]["selected_epoch"] == pinned["encoder"]["selected_epoch"]
    assert now["encoder"]["heldout_accuracy"] == pinned["encoder"]["heldout_accuracy"]
    assert now["best_epoch"] == pinned["best_epoch"]
    assert len(now["reports"]) == len(pinned["reports"])
    for epoch, (a, b) in enumerate(zip(now["reports"], pinned["reports"], strict=True), 1):
        _assert_metrics_equal(a, b, f"report of epoch {epoch}")
    _assert_metrics_equal(now["final"], pinned["final"], "final metrics")


if __name__ == "__main__":  # re-record: python -m tests.neuron.test_pinned_run
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        record = run_tiny(Path(folder) / "cache", Path(folder) / "run")
    PINNED.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINNED}", file=sys.stderr)
