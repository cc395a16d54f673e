"""Provenance tags read back from a real MLflow SQLite store: the text encoder that actually
produced the embeddings (name, dimension, hash) and the augmentation of every run."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from ray.tune.experiment import Trial

from neuron.config import load_config
from neuron.prepare import prepare
from search.tracking import MlflowTracker, StudyInfo, TrackingCallback


def test_study_and_trial_runs_carry_the_text_encoder_and_augmentation(
    store: str, tiny_cache: Path, tmp_path: Path
) -> None:
    base = load_config("tiny", {"run.cache_dir": str(tiny_cache)})
    prepared = prepare(base, progress=False)
    described = prepared.describe()
    split = prepared.class_split
    study = StudyInfo(
        search_name="provenance",
        split=base.data.split,
        dataset=prepared.dataset_name,
        class_names=prepared.class_names,
        training_classes=split.training,
        validation_classes=split.validation,
        unseen_classes=split.unseen,
        objective="val/zsl_top1",
        mode="max",
        base_config=base.to_dict(),
        optuna_storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        output_dir=str(tmp_path / "out"),
        text_provenance={
            key: described[key] for key in ("text_encoder", "text_dim", "text_embedding_sha256")
        },
    )
    tracker = MlflowTracker(store, "provenance-test")
    study_run = tracker.start_study(study, None)
    callback = TrackingCallback(tracker, study, study_run)
    trial = Trial(
        "train_trial",
        config={"overrides": {"data.rotation_degrees": 5.0, "train.augmented_views": 3}},
        trial_id="prov0001",
        stub=True,
    )
    trial_run = callback.run_id(trial)

    client = mlflow.MlflowClient(store)
    for run_id, rotation, views in (
        (study_run, base.data.rotation_degrees, base.train.augmented_views),
        (trial_run, 5.0, 3),
    ):
        tags = client.get_run(run_id).data.tags
        assert tags["neuron.text_encoder"] == "packaged:all-MiniLM-L6-v2"
        assert tags["neuron.text_dim"] == "384"
        assert tags["neuron.text_embedding_sha256"] == described["text_embedding_sha256"]
        assert len(tags["neuron.text_embedding_sha256"]) == 64
        augmentation = json.loads(tags["neuron.augmentation"])
        assert augmentation["rotation_degrees"] == rotation
        assert augmentation["augmented_views"] == views
        assert tags["neuron.augmentation.rotation_degrees"] == str(rotation)
        assert tags["neuron.augmentation.train_path"] == "cache"
