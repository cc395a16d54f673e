"""Everything built before stage 2, once per node: the dataset file, the class split, the encoded
side information, the stage-1 encoder and the feature cache.

`prepare(cfg)` builds each into `run.cache_dir` under a file lock, keyed by a hash of everything
it depends on (neuron.cache); later calls and other trials reuse them. It returns `Prepared`,
the paths stage 2 (neuron.train.fit) reads.

`prepare_all_seen(cfg, prepared)` builds the same for the all-seen-classes variant that
`eval.refit` and `eval.paper_parity` train on: no validation classes, no held-out samples. Its
class split and sample sets differ, so its feature cache (and, with `eval.refit_encoder`, its
encoder) get keys of their own and live next to the honest ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuron.cache import build_once, stable_hash
from neuron.config import Config
from neuron.dataset import SkeletonTable, open_dataset
from neuron.device import apply_threads, keep_host_memory
from neuron.extract import build_feature_cache, feature_cache_key
from neuron.pretrain import encoder_key, pretrain_encoder
from neuron.safeload import load_torch_file, save_torch_file
from neuron.sideinfo import SideInformation, load_side_information
from neuron.splits import ClassSplit, make_class_split, partition_samples


@dataclass(frozen=True)
class Prepared:
    """Everything stage 2 reads, by path, so trials share one copy per node."""

    dataset_path: Path
    dataset_name: str
    split: str
    class_names: tuple[str, ...]
    class_split: ClassSplit
    side_information_path: Path
    encoder_checkpoint: Path
    feature_cache_path: Path
    cache_key: str
    text_encoder: str = ""
    """The text encoder that produced the side-information embeddings (not the configured
    `text_model` when the official precomputed tensors are read)."""
    text_dim: int = 0
    """Embedding dimension D of the side information."""
    text_embedding_sha256: str = ""
    """SHA-256 of the spatial and temporal embedding tensors' bytes (float32, C order)."""
    augmentation: dict[str, Any] = field(default_factory=dict)
    """The training augmentation this run's features were made with (`augmentation_settings`)."""

    def describe(self) -> dict[str, Any]:
        """Dataset, split, class lists and provenance (for metrics files and tracking tags)."""
        names = self.class_names
        return {
            "text_encoder": self.text_encoder,
            "text_dim": self.text_dim,
            "text_embedding_sha256": self.text_embedding_sha256,
            "augmentation": dict(self.augmentation),
            "dataset": self.dataset_name,
            "split": self.split,
            "training_classes": list(self.class_split.training),
            "validation_classes": list(self.class_split.validation),
            "unseen_classes": list(self.class_split.unseen),
            "training_class_names": [names[c] for c in self.class_split.training],
            "validation_class_names": [names[c] for c in self.class_split.validation],
            "unseen_class_names": [names[c] for c in self.class_split.unseen],
        }


def dataset_file(cfg: Config, progress: bool = False) -> Path:
    """The dataset path; the synthetic dataset is generated into the cache on first use."""
    if cfg.data.path:
        return Path(cfg.data.path)
    from neuron.synthetic import write_synthetic

    synthetic = cfg.data.synthetic
    path = (
        Path(cfg.run.cache_dir)
        / "datasets"
        / f"synthetic-{synthetic.preset}-seed{synthetic.seed}.arrow"
    )
    build_once(
        path,
        path.with_suffix(".lock"),
        lambda: write_synthetic(path, preset=synthetic.preset, seed=synthetic.seed),
        f"generating the synthetic dataset ({synthetic.preset}) → {path}",
        progress,
    )
    return path


def split_samples(
    cfg: Config, table: SkeletonTable, all_seen: bool = False
) -> tuple[ClassSplit, dict[str, np.ndarray]]:
    """Class roles and sample sets. `all_seen`: every seen class trains and no sample is held
    out (the refit and reference protocols; the validation sets are then empty)."""
    class_split = make_class_split(
        cfg.data.split,
        table.num_classes,
        unseen_classes=cfg.data.unseen_classes,
        validation_classes=0 if all_seen else cfg.data.validation_classes,
        validation_seed=cfg.data.validation_seed,
        class_names=table.class_names,
        class_groups=cfg.data.class_groups,
    )
    samples = partition_samples(
        table.labels,
        table.partition,
        class_split,
        heldout_fraction=0.0 if all_seen else cfg.data.heldout_fraction,
        seed=cfg.data.validation_seed,
    )
    return class_split, samples


def augmentation_settings(cfg: Config) -> dict[str, Any]:
    """The training augmentation of a run, as logged with it."""
    return {
        "rotation_degrees": cfg.data.rotation_degrees,
        "crop_min_ratio": cfg.data.crop_min_ratio,
        "window": cfg.data.window,
        "train_path": cfg.train.path,
        "augmented_views": cfg.train.augmented_views,
        "encoder_batchnorm": cfg.train.encoder_batchnorm,
        "test_time_augmentation": "paper_parity only" if cfg.eval.paper_parity else "none",
    }


def text_provenance(side: SideInformation) -> dict[str, Any]:
    """The encoder that actually produced the embeddings, their dimension and a hash of them."""
    digest = hashlib.sha256()
    for tensor in (side.spatial, side.temporal):
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return {
        "text_encoder": side.text_model,
        "text_dim": side.dim,
        "text_embedding_sha256": digest.hexdigest(),
    }


def side_information_file(cfg: Config, table: SkeletonTable, progress: bool = False) -> Path:
    """Encoded side information (torch tensors), cached by the text config and class names."""
    key = stable_hash(
        {
            "side": cfg.data.side_information,
            "classes": table.class_names,
            "dataset": table.info.dataset,
        }
    )
    path = Path(cfg.run.cache_dir) / "side_information" / f"{key}.pt"

    def encode() -> None:
        side = load_side_information(
            cfg.data.side_information,
            table.class_names,
            table.info.dataset,
            Path(cfg.run.cache_dir),
        )
        save_torch_file(
            {
                "spatial": side.spatial,
                "temporal": side.temporal,
                "class_names": side.class_names,
                "source": side.source,
                "text_model": side.text_model,
            },
            path,
        )

    build_once(
        path,
        path.with_suffix(".lock"),
        encode,
        f"encoding side information ({cfg.data.side_information.source}) → {path}",
        progress,
    )
    return path


def load_side_information_file(path: Path) -> SideInformation:
    saved = load_torch_file(
        path,
        "side-information cache entry",
        f"delete {path} (it is rebuilt from the side information) or point run.cache_dir elsewhere",
    )
    return SideInformation(
        spatial=saved["spatial"],
        temporal=saved["temporal"],
        class_names=tuple(saved["class_names"]),
        source=saved["source"],
        text_model=saved["text_model"],
    )


def _features(
    cfg: Config,
    table: SkeletonTable,
    samples: dict[str, np.ndarray],
    encoder_path: Path,
    progress: bool,
) -> tuple[Path, str]:
    features_key = feature_cache_key(cfg, encoder_path, samples)
    features_path = Path(cfg.run.cache_dir) / "features" / f"{features_key}.arrow"
    build_once(
        features_path,
        features_path.with_suffix(".lock"),
        lambda: build_feature_cache(
            cfg, table, samples, encoder_path, features_path, features_key, progress
        ),
        f"extracting the feature cache → {features_path}",
        progress,
    )
    return features_path, features_key


def _encoder(
    cfg: Config,
    path: Path,
    table: SkeletonTable,
    class_split: ClassSplit,
    samples: dict[str, np.ndarray],
    progress: bool,
) -> Path:
    encoder_dir = Path(cfg.run.cache_dir) / "encoders" / encoder_key(cfg, path, class_split)
    encoder_path = encoder_dir / "encoder.pt"
    build_once(
        encoder_path,
        encoder_dir.with_suffix(".lock"),
        lambda: pretrain_encoder(cfg, table, class_split, samples, encoder_dir, progress),
        f"stage 1: training the encoder on {len(class_split.training)} classes → {encoder_dir}",
        progress,
    )
    return encoder_path


def prepare(cfg: Config, progress: bool = True) -> Prepared:
    """Build or reuse the dataset, side information, stage-1 encoder and feature cache."""
    apply_threads(cfg.run.threads)
    path = dataset_file(cfg, progress)
    table = open_dataset(path)
    class_split, samples = split_samples(cfg, table)
    side_path = side_information_file(cfg, table, progress)
    with keep_host_memory():
        encoder_path = _encoder(cfg, path, table, class_split, samples, progress)
        features_path, features_key = _features(cfg, table, samples, encoder_path, progress)
    return Prepared(
        dataset_path=path,
        dataset_name=table.info.dataset,
        split=cfg.data.split,
        class_names=table.class_names,
        class_split=class_split,
        side_information_path=side_path,
        encoder_checkpoint=encoder_path,
        feature_cache_path=features_path,
        cache_key=features_key,
        augmentation=augmentation_settings(cfg),
        **text_provenance(load_side_information_file(side_path)),
    )


def prepare_all_seen(cfg: Config, prepared: Prepared, progress: bool = True) -> Prepared:
    """The all-seen-classes variant of `prepared` (eval.refit, eval.paper_parity): every seen
    class and sample trains stage 2, and with `eval.refit_encoder` stage 1 too, for the epoch
    count that stage 1 selected on the honest split."""
    table = open_dataset(prepared.dataset_path)
    class_split, samples = split_samples(cfg, table, all_seen=True)
    encoder_path = prepared.encoder_checkpoint
    if cfg.eval.refit_encoder:
        saved = load_torch_file(
            encoder_path,
            "stage-1 encoder checkpoint",
            f"delete {encoder_path.parent} (stage 1 is trained again) or point run.cache_dir "
            "elsewhere",
        )
        epochs = max(int(saved["selected_epoch"]), 1)
        # The first `epochs` epochs of the same schedule (a milestone at or past the last epoch
        # never lowers a rate that an epoch uses).
        milestones = [m for m in cfg.pretrain.optimizer.lr_milestones if m < epochs]
        refit_cfg = cfg.replace(
            {"pretrain.epochs": epochs, "pretrain.optimizer.lr_milestones": milestones}
        )
        encoder_path = _encoder(
            refit_cfg, prepared.dataset_path, table, class_split, samples, progress
        )
    features_path, features_key = _features(cfg, table, samples, encoder_path, progress)
    return dataclasses.replace(
        prepared,
        class_split=class_split,
        encoder_checkpoint=encoder_path,
        feature_cache_path=features_path,
        cache_key=features_key,
    )
