"""Building the feature cache, and where stage 2 reads its features.

The frozen stage-1 encoder (neuron.pretrain) turns every clip of the split into two pooled
feature views that are written once per node into a feature cache (the file format lives in
neuron.features, which the importers also write): one clean view of every clip and
`train.augmented_views` augmented views (random crop and rotation) of every training clip.
`FeatureSource` hands stage 2 batches of those features: from the memory-mapped cache, a copy
of it on the GPU, or (`train.path: encoder`) straight from the encoder, where every training
epoch draws fresh augmentations.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from neuron.cache import file_fingerprint, stable_hash
from neuron.config import Config
from neuron.dataset import SkeletonTable, open_dataset
from neuron.device import cache_fits_on_device, resolve_device
from neuron.encoder import ShiftGCN, pool_features
from neuron.features import FeatureCacheError, FeatureWriter, open_feature_table
from neuron.pretrain import clip_batch, load_encoder

if TYPE_CHECKING:
    from neuron.prepare import Prepared

SUBSETS = ("train", "val_seen", "val_unseen", "test_seen", "test_unseen")
"""The subsets of a split's feature cache (neuron.splits.partition_samples)."""

EXTRACTION_BATCH_SIZE = 256
"""Clips per frozen-encoder forward pass while building the cache. The encoder runs in eval
mode, so this changes memory and speed only, never the features."""

FRESH_VIEW_BASE = 1_000_000
"""View ids `FRESH_VIEW_BASE + epoch` seed the fresh stage-2 augmentations of `train.path:
encoder`; they never collide with cached views (1..K) or stage 1's (1000 + epoch)."""


def feature_views(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Which preprocessing views each subset gets in the cache."""
    augmented = tuple(range(1, cfg.train.augmented_views + 1))
    views: dict[str, tuple[int, ...]] = {subset: (0,) for subset in SUBSETS}
    views["train"] = (0, *augmented)
    if cfg.eval.paper_parity:
        # The reference evaluates on randomly cropped and rotated test inputs.
        views["test_seen"] = views["test_unseen"] = (0, 1)
    return views


@torch.no_grad()
def encode_features(
    cfg: Config,
    encoder: ShiftGCN,
    table: SkeletonTable,
    rows: np.ndarray,
    views: np.ndarray,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder features of the given clips: joint (B, C, V) and frame (B, C, T')."""
    clips = clip_batch(cfg, table, rows, views).to(device)
    return pool_features(encoder.features(clips))


def build_feature_cache(
    cfg: Config,
    table: SkeletonTable,
    samples: dict[str, np.ndarray],
    encoder_path: Path,
    out_path: Path,
    key: str,
    progress: bool = True,
) -> Path:
    device = resolve_device(cfg.run.device)
    encoder = load_encoder(cfg, encoder_path, table.info.num_joints, device)
    channels = cfg.model.encoder.feature_channels
    frames = cfg.model.encoder.feature_frames(cfg.data.window)
    info = {
        "key": key,
        "dataset": table.info.dataset,
        "split": cfg.data.split,
        "encoder": str(encoder_path),
    }
    views = feature_views(cfg)
    total = sum(len(samples[s]) * len(views[s]) for s in SUBSETS)
    batch_size = EXTRACTION_BATCH_SIZE
    with (
        FeatureWriter(out_path, channels, table.info.num_joints, frames, info) as writer,
        tqdm(total=total, desc="feature cache", disable=not progress, leave=False) as bar,
    ):
        for subset in SUBSETS:
            for view in views[subset]:
                rows = samples[subset]
                for start in range(0, len(rows), batch_size):
                    batch = rows[start : start + batch_size]
                    view_ids = np.full(len(batch), view, dtype=np.int64)
                    joint, frame = encode_features(cfg, encoder, table, batch, view_ids, device)
                    writer.add(
                        joint.float().cpu().numpy(),
                        frame.float().cpu().numpy(),
                        table.labels[batch],
                        subset,
                        view,
                        batch,
                    )
                    bar.update(len(batch))
    return out_path


def feature_cache_key(cfg: Config, encoder_path: Path, samples: dict[str, np.ndarray]) -> str:
    return stable_hash(
        {
            "encoder": file_fingerprint(encoder_path),
            "views": feature_views(cfg),
            "preprocessing": [
                cfg.data.window,
                cfg.data.crop_min_ratio,
                cfg.data.rotation_degrees,
                cfg.data.max_bodies,
            ],
            "samples": {s: hashlib.sha256(samples[s].tobytes()).hexdigest()[:16] for s in SUBSETS},
            "seed": cfg.run.seed,
        }
    )


class FeatureSource:
    """Where stage 2 gets its features: the memory-mapped cache, or the frozen encoder."""

    def __init__(self, cfg: Config, prepared: Prepared, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.table = open_feature_table(prepared.feature_cache_path)
        if self.table.info.get("key") != prepared.cache_key:
            raise FeatureCacheError(
                f"{prepared.feature_cache_path}: feature cache key {self.table.info.get('key')!r} does not "
                f"match {prepared.cache_key!r}; delete the file to rebuild it"
            )
        self.encoder = None
        self.on_device: tuple[torch.Tensor, torch.Tensor] | None = None
        if (
            cfg.train.path == "cache"
            and device.type == "cuda"
            and cache_fits_on_device(
                cfg.run.cache_on_device,
                self.table.nbytes(),
                torch.cuda.get_device_properties(device).total_memory,
                cfg.run.gpu_fraction,
            )
        ):
            # One host→device copy per trial; batches are then gathered on the GPU.
            every = np.arange(len(self.table))
            joint, frame = self.table.gather(every)
            self.on_device = (
                torch.from_numpy(joint).to(device),
                torch.from_numpy(frame).to(device),
            )
        if cfg.train.path == "encoder":
            self.skeletons = open_dataset(prepared.dataset_path)
            self.encoder = load_encoder(
                cfg, prepared.encoder_checkpoint, self.skeletons.info.num_joints, device
            )

    def training_features(
        self, indices: np.ndarray, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of training rows `indices` in `epoch`. From the cache: the cached views as
        they are. Through the encoder: a fresh random crop and rotation of each row's clip,
        seeded by (run.seed, epoch, row); with `train.encoder_batchnorm: train` the encoder's
        BatchNorm normalises with the batch's statistics and updates its running statistics."""
        if self.encoder is None:
            return self.features(indices)
        rows = self.table.rows[indices]
        views = np.full(len(rows), FRESH_VIEW_BASE + epoch, dtype=np.int64)
        if self.cfg.train.encoder_batchnorm == "train":
            self.encoder.train()
        try:
            return encode_features(self.cfg, self.encoder, self.skeletons, rows, views, self.device)
        finally:
            self.encoder.eval()

    def features(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of cache rows `indices`: joint (B, C, V), frame (B, C, T') on the device."""
        if self.on_device is not None:
            selected = torch.from_numpy(np.asarray(indices)).to(self.device)
            return self.on_device[0][selected], self.on_device[1][selected]
        if self.encoder is None:
            joint, frame = self.table.gather(indices)
            return torch.from_numpy(joint).to(self.device), torch.from_numpy(frame).to(self.device)
        rows = self.table.rows[indices]
        views = self.table.views[indices].astype(np.int64)
        return encode_features(self.cfg, self.encoder, self.skeletons, rows, views, self.device)
