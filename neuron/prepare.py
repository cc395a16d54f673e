"""Everything built before stage 2, once per node: the dataset file, the class split, the encoded
side information, the stage-1 encoder and the feature cache.

`prepare(cfg)` builds each into `run.cache_dir` under a file lock, keyed by a hash of everything
it depends on (neuron.cache); later calls and other trials reuse them. It returns `Prepared`,
the paths stage 2 (neuron.train.fit) reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuron.atomic import atomic_path
from neuron.cache import build_once, stable_hash
from neuron.config import Config
from neuron.dataset import SkeletonTable, open_dataset
from neuron.extract import build_feature_cache, feature_cache_key
from neuron.pretrain import encoder_key, pretrain_encoder
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

    def describe(self) -> dict[str, Any]:
        """Dataset, split and class lists (for metrics files and tracking tags)."""
        names = self.class_names
        return {
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


def split_samples(cfg: Config, table: SkeletonTable) -> tuple[ClassSplit, dict[str, np.ndarray]]:
    class_split = make_class_split(
        cfg.data.split,
        table.num_classes,
        unseen_classes=cfg.data.unseen_classes,
        validation_classes=cfg.data.validation_classes,
        validation_seed=cfg.data.validation_seed,
        class_names=table.class_names,
        class_groups=cfg.data.class_groups,
    )
    samples = partition_samples(
        table.labels,
        table.partition,
        class_split,
        heldout_fraction=cfg.data.heldout_fraction,
        seed=cfg.data.validation_seed,
    )
    return class_split, samples


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
        with atomic_path(path) as temporary:
            torch.save(
                {
                    "spatial": side.spatial,
                    "temporal": side.temporal,
                    "class_names": side.class_names,
                    "source": side.source,
                    "text_model": side.text_model,
                },
                temporary,
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
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return SideInformation(
        spatial=saved["spatial"],
        temporal=saved["temporal"],
        class_names=tuple(saved["class_names"]),
        source=saved["source"],
        text_model=saved["text_model"],
    )


def prepare(cfg: Config, progress: bool = True) -> Prepared:
    """Build or reuse the dataset, side information, stage-1 encoder and feature cache."""
    cache = Path(cfg.run.cache_dir)
    path = dataset_file(cfg, progress)
    table = open_dataset(path)
    class_split, samples = split_samples(cfg, table)
    side_path = side_information_file(cfg, table, progress)
    key = encoder_key(cfg, path, class_split)
    encoder_dir = cache / "encoders" / key
    encoder_path = encoder_dir / "encoder.pt"
    build_once(
        encoder_path,
        encoder_dir.with_suffix(".lock"),
        lambda: pretrain_encoder(cfg, table, class_split, samples, encoder_dir, progress),
        f"stage 1: training the encoder on {len(class_split.training)} classes → {encoder_dir}",
        progress,
    )
    features_key = feature_cache_key(cfg, encoder_path, samples)
    features_path = cache / "features" / f"{features_key}.arrow"
    build_once(
        features_path,
        features_path.with_suffix(".lock"),
        lambda: build_feature_cache(
            cfg, table, samples, encoder_path, features_path, features_key, progress
        ),
        f"extracting the feature cache → {features_path}",
        progress,
    )
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
    )
