"""Two-stage training on the tiny synthetic set: caches, determinism, resume, honesty, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from neuron.cli import main
from neuron.config import ConfigError, load_config
from neuron.device import cache_fits_on_device
from neuron.evaluate import predict_logits
from neuron.extract import FeatureSource
from neuron.features import open_feature_table
from neuron.optim import DivergenceError
from neuron.prepare import load_side_information_file, prepare
from neuron.train import CheckpointError, build_head, fit


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny(cache_dir: Path):
    cfg = load_config("tiny", {"run.cache_dir": str(cache_dir)})
    return cfg, prepare(cfg, progress=False)


@pytest.mark.slow  # builds the tiny caches: stage 1 and text encoding (~1 min)
def test_prepare_builds_once_and_reuses_every_cache(tiny) -> None:
    cfg, prepared = tiny
    stamps = {
        p: p.stat().st_mtime_ns for p in (prepared.encoder_checkpoint, prepared.feature_cache_path)
    }
    again = prepare(cfg, progress=False)
    assert again == prepared
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow  # builds the tiny caches: stage 1 and text encoding (~1 min)
def test_feature_cache_is_rebuilt_when_its_key_changes(tiny) -> None:
    cfg, prepared = tiny
    other = prepare(cfg.replace({"train.augmented_views": 2}), progress=False)
    assert other.encoder_checkpoint == prepared.encoder_checkpoint  # stage 1 does not depend on it
    assert other.feature_cache_path != prepared.feature_cache_path
    table = open_feature_table(other.feature_cache_path)
    assert set(np.unique(table.views[table.subsets == "train"])) == {0, 1, 2}


@pytest.mark.slow  # builds the tiny caches: stage 1 and text encoding (~1 min)
def test_unseen_and_validation_classes_never_reach_training_features(tiny) -> None:
    _, prepared = tiny
    table = open_feature_table(prepared.feature_cache_path)
    split = prepared.class_split
    train_labels = set(table.labels[table.subsets == "train"].tolist())
    assert train_labels <= set(split.training)
    assert not train_labels & set(split.unseen)
    assert not train_labels & set(split.validation)
    assert set(table.labels[table.subsets == "test_unseen"].tolist()) == set(split.unseen)
    assert set(table.labels[table.subsets == "val_unseen"].tolist()) == set(split.validation)


@pytest.mark.slow  # builds the tiny caches: stage 1 and text encoding (~1 min)
def test_cache_path_and_encoder_path_predict_the_same(tiny) -> None:
    cfg, prepared = tiny
    side = load_side_information_file(prepared.side_information_path)
    text = (side.spatial, side.temporal)
    device = torch.device("cpu")
    cached = FeatureSource(cfg, prepared, device)
    through_encoder = FeatureSource(cfg.replace({"train.path": "encoder"}), prepared, device)
    head = build_head(cfg, cached.table, side.dim)
    # Clean validation rows and augmented training rows: identical inputs by construction.
    indices = np.concatenate(
        [cached.table.select("val_unseen"), cached.table.select("train", view=1)[:16]]
    )
    classes = tuple(range(len(prepared.class_names)))
    a = predict_logits(cfg, head, cached, text, indices, classes)
    b = predict_logits(cfg, head, through_encoder, text, indices, classes)
    for left, right in zip(a, b, strict=True):
        assert left is not None and right is not None
        np.testing.assert_allclose(left, right, rtol=1e-4, atol=1e-6)
        assert (left.argmax(-1) == right.argmax(-1)).all()


def _fit(cfg, prepared, run_dir: Path, **kwargs):
    reports: list[tuple[dict[str, float], Path | None]] = []
    saved = run_dir.parent / f"{run_dir.name}-saved"

    def report(metrics: dict[str, float], checkpoint: Path | None) -> None:
        reports.append((dict(metrics), checkpoint))
        if checkpoint is not None:
            shutil.copytree(checkpoint, saved / checkpoint.name, dirs_exist_ok=True)

    result = fit(cfg, report, run_dir=run_dir, prepared=prepared, **kwargs)
    return result, reports, saved


@pytest.mark.slow  # builds the tiny caches: stage 1 and text encoding (~1 min)
def test_same_seed_gives_bitwise_identical_runs(tiny, tmp_path: Path) -> None:
    cfg, prepared = tiny
    first, reports_a, _ = _fit(cfg, prepared, tmp_path / "a")
    second, reports_b, _ = _fit(cfg, prepared, tmp_path / "b")
    assert [m for m, _ in reports_a] != []
    for (a, _), (b, _) in zip(reports_a, reports_b, strict=True):
        assert {k: v for k, v in a.items() if k != "epoch_seconds"} == {
            k: v for k, v in b.items() if k != "epoch_seconds"
        }
    assert first.metrics == second.metrics


@pytest.mark.slow  # builds the tiny caches: stage 1 and text encoding (~1 min)
def test_resumed_run_equals_the_uninterrupted_run(tiny, tmp_path: Path) -> None:
    cfg, prepared = tiny
    full, full_reports, saved = _fit(cfg, prepared, tmp_path / "full")
    resumed, resumed_reports, _ = _fit(
        cfg, prepared, tmp_path / "resumed", resume_from=saved / "epoch-0001"
    )
    assert [int(m["epoch"]) for m, _ in resumed_reports] == list(range(2, cfg.train.epochs + 1))
    assert resumed.metrics == full.metrics
    assert resumed_reports[-1][0]["train/loss"] == full_reports[-1][0]["train/loss"]

    # A finished run resumed from its last checkpoint (a search driver killed after the final
    # report) trains nothing and re-reports the final metrics.
    last = saved / f"epoch-{cfg.train.epochs:04d}"
    again, again_reports, _ = _fit(cfg, prepared, tmp_path / "again", resume_from=last)
    assert [(m, c) for m, c in again_reports] == [(full_reports[-1][0], None)]
    assert again.metrics == full.metrics and again.best_epoch == full.best_epoch

    # replay: the checkpoint's own epoch is reported again first, then training goes on.
    replayed, replayed_reports, _ = _fit(
        cfg, prepared, tmp_path / "replayed", resume_from=saved / "epoch-0001", replay=True
    )
    assert replayed_reports[0] == (full_reports[0][0], None)
    assert [int(m["epoch"]) for m, _ in replayed_reports] == list(range(1, cfg.train.epochs + 1))
    assert replayed.metrics == full.metrics


@pytest.mark.slow  # builds the tiny caches: stage 1 and text encoding (~1 min)
def test_selection_is_on_validation_and_test_is_evaluated_once(tiny, tmp_path: Path) -> None:
    cfg, prepared = tiny
    result, reports, _ = _fit(cfg, prepared, tmp_path / "run")
    history = [m[cfg.eval.selection_metric] for m, _ in reports]
    assert result.best_epoch == len(history) - int(np.argmax(history[::-1]))  # last maximum
    # Every epoch reports the selection so far: what the run would return if stopped there.
    selected = [m[f"selected/{cfg.eval.selection_metric}"] for m, _ in reports]
    assert selected == list(np.maximum.accumulate(history))
    with_test = [m for m, _ in reports if any(k.startswith("test/") for k in m)]
    assert len(with_test) == 1 and with_test[0] is reports[-1][0]
    assert (
        result.metrics["val/zsl_top1"] == max(history)
        or cfg.eval.selection_metric != "val/zsl_top1"
    )
    for key in ("test/zsl_top1", "test/gzsl_seen", "test/gzsl_unseen", "test/gzsl_h", "chance/zsl"):
        assert 0.0 <= result.metrics[key] <= 1.0
    assert result.metrics["chance/zsl"] == pytest.approx(1 / len(prepared.class_split.unseen))
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test/zsl_top1"] == result.metrics["test/zsl_top1"]
    assert written["classes"]["unseen_classes"] == list(prepared.class_split.unseen)


@pytest.mark.slow  # builds the tiny caches: stage 1 and text encoding (~1 min)
def test_a_checkpoint_from_another_config_is_refused(tiny, tmp_path: Path) -> None:
    cfg, prepared = tiny
    _, _, saved = _fit(cfg, prepared, tmp_path / "run")
    other = cfg.replace({"model.logit_scale": 0.2})
    with pytest.raises(
        CheckpointError, match=r"another config.*model\.logit_scale: checkpoint 10\.0, now 0\.2"
    ):
        fit(other, run_dir=tmp_path / "other", resume_from=saved / "epoch-0001", prepared=prepared)


@pytest.mark.slow  # builds the tiny caches: stage 1 and text encoding (~1 min)
def test_divergence_stops_with_a_reason_and_keeps_the_last_good_checkpoint(
    tiny, tmp_path: Path
) -> None:
    cfg, prepared = tiny
    diverging = cfg.replace(
        {"train.optimizer.lr": 1e30, "train.epochs": 6, "train.optimizer.lr_milestones": [5]}
    )
    epochs: list[int] = []
    with pytest.raises(DivergenceError, match=r"loss is (nan|inf).*lower train\.optimizer\.lr"):
        fit(
            diverging,
            lambda m, c: epochs.append(int(m["epoch"])),
            run_dir=tmp_path / "run",
            prepared=prepared,
        )
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("epoch-*"))
    if epochs:
        assert [c.name for c in checkpoints] == [f"epoch-{epochs[-1]:04d}"]
        assert (checkpoints[0] / "state.pt").is_file()
    else:
        assert checkpoints == []
    assert not list((tmp_path / "run").rglob("*.partial"))


@pytest.mark.slow  # builds the tiny caches: stage 1 and text encoding (~1 min)
def test_train_command_writes_flat_metrics_json(cache_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "metrics.json"
    code = main(
        [
            "train",
            "tiny",
            f"run.cache_dir={cache_dir}",
            f"run.output_dir={tmp_path / 'runs'}",
            "--metrics-out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads(out.read_text())
    for key in ("test/zsl_top1", "test/gzsl_h", "val/zsl_top1", "chance/zsl"):
        assert isinstance(metrics[key], float)
    assert metrics["classes"]["unseen_class_names"]
    printed = capsys.readouterr().out
    assert "GZSL harmonic mean" in printed and "chance (ZSL)" in printed


def test_bad_config_exits_with_a_clear_message(capsys) -> None:
    assert main(["train", "tiny", "model.spatial_prototypes=0"]) == 2
    assert "model.spatial_prototypes=0: must be >= 1" in capsys.readouterr().err


def test_the_feature_cache_goes_to_the_gpu_only_when_it_fits_the_runs_share() -> None:
    gib = 2**30
    assert cache_fits_on_device("auto", 5 * gib, 80 * gib, 1.0)  # 5 GiB of 80: copy once
    assert not cache_fits_on_device("auto", 6 * gib, 80 * gib, 0.25)  # over 1/4 of a 20 GiB share
    assert cache_fits_on_device("auto", 5 * gib, 80 * gib, 0.25)
    assert cache_fits_on_device("always", 100 * gib, 80 * gib, 0.25)
    assert not cache_fits_on_device("never", 1, 80 * gib, 1.0)
    with pytest.raises(ConfigError, match=r"run\.gpu_fraction=0\.0: must be in \(0, 1\]"):
        load_config("tiny", ["run.gpu_fraction=0"])
