"""Two-stage training: stage 1 (Shift-GCN on the training classes), the feature cache, and
stage 2 (the Neuron head), with honest model selection.

Entry points:
    prepare(cfg)            dataset, side information, stage-1 encoder and feature cache, each
                            built once into `run.cache_dir` under a file lock and keyed by a hash
                            of everything it depends on; later calls and other trials reuse them.
    fit(cfg, report, ...)   stage 2. Reports per-epoch metrics and a resumable checkpoint through
                            `report`; selects the epoch on the validation split (pseudo-unseen
                            classes carved from the seen ones) and evaluates the unseen test
                            classes once, on that epoch, at the end.

Class roles (see neuron.splits): `training` classes train both stages; `validation` classes
(pseudo-unseen, part of the seen classes) only select epochs and calibrate GZSL; `unseen` classes
are touched once, at the end. The GZSL test label space is training ∪ unseen classes.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as functional
from tqdm import tqdm

from neuron import __version__
from neuron.atomic import atomic_path, write_text_atomic
from neuron.config import Config, config_from_plain, dump_yaml, to_plain
from neuron.dataset import SkeletonTable, open_dataset
from neuron.encoder import ShiftGCN, pool_features
from neuron.features import FeatureTable, FeatureWriter, open_feature_table
from neuron.metrics import chance_levels, evaluate_split, paper_parity_metrics
from neuron.model import NeuronHead, class_logits, neuron_loss
from neuron.preprocess import prepare_sequence
from neuron.sideinfo import SideInformation, load_side_information
from neuron.splits import ClassSplit, make_class_split, partition_samples

Reporter = Callable[[dict[str, float], Path | None], None]
SUBSETS = ("train", "val_seen", "val_unseen", "test_seen", "test_unseen")


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointError(ValueError):
    """A checkpoint does not belong to this configuration."""


# --------------------------------------------------------------------------------------------
# Small utilities


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device=cuda: no CUDA device is visible; use run.device=cpu or auto")
    return torch.device(device)


def stable_hash(value: Any) -> str:
    return hashlib.sha256(
        json.dumps(to_plain(value), sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """Cheap content fingerprint: size plus the first and last MiB."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, path.stat().st_size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise builders of one cache entry across processes on a node (and NFS with locks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


def build_once(
    target: Path, lock: Path, build: Callable[[], Any], message: str, progress: bool
) -> None:
    """Build a cache entry unless it exists; the lock makes concurrent trials on a node build it
    once while the others wait and then reuse it."""
    if target.is_file():
        return
    with file_lock(lock):
        if not target.is_file():
            _log(progress, message)
            build()


# --------------------------------------------------------------------------------------------
# Preparation: dataset, side information, split


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


# --------------------------------------------------------------------------------------------
# Skeleton clips (stage 1 and the encoder path)


def clip_batch(
    cfg: Config, table: SkeletonTable, rows: np.ndarray, views: np.ndarray
) -> torch.Tensor:
    """Preprocessed clips (B, 3, T, V, M). View 0 is the clean, deterministic preprocessing;
    view v > 0 is the augmentation drawn from a generator seeded by (seed, v, row), so the
    feature cache and the encoder path see identical inputs."""
    clips = []
    for row, view in zip(rows, views, strict=True):
        generator = np.random.default_rng([cfg.run.seed, int(view), int(row)]) if view > 0 else None
        clips.append(
            prepare_sequence(
                table.sequence(int(row)),
                window=cfg.data.window,
                max_bodies=cfg.data.max_bodies,
                train=view > 0,
                crop_min_ratio=cfg.data.crop_min_ratio,
                rotation_degrees=cfg.data.rotation_degrees,
                rng=generator,
            )
        )
    return torch.from_numpy(np.stack(clips))  # (B, 3, T, V, M)


class _ClipDataset(torch.utils.data.Dataset):
    """Stage-1 clips: each epoch draws a fresh augmentation view id per sample."""

    def __init__(
        self, cfg: Config, table: SkeletonTable, rows: np.ndarray, labels: np.ndarray, augment: bool
    ) -> None:
        self.cfg, self.table, self.rows, self.labels, self.augment = (
            cfg,
            table,
            rows,
            labels,
            augment,
        )
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # Views above 1000 never collide with the cached augmented views.
        view = 1000 + self.epoch if self.augment else 0
        clip = clip_batch(self.cfg, self.table, self.rows[index : index + 1], np.array([view]))[0]
        return clip, int(self.labels[index])


# --------------------------------------------------------------------------------------------
# Stage 1: the Shift-GCN encoder on the training classes


def encoder_key(cfg: Config, dataset_path: Path, class_split: ClassSplit) -> str:
    return stable_hash(
        {
            "dataset": file_fingerprint(dataset_path),
            "training": class_split.training,
            "heldout": [
                cfg.data.heldout_fraction,
                cfg.data.validation_seed,
                class_split.validation,
            ],
            "encoder": cfg.model.encoder,
            "pretrain": cfg.pretrain,
            "preprocessing": [
                cfg.data.window,
                cfg.data.crop_min_ratio,
                cfg.data.rotation_degrees,
                cfg.data.max_bodies,
            ],
            "seed": cfg.run.seed,
        }
    )


def build_encoder(cfg: Config, num_classes: int, num_joints: int) -> ShiftGCN:
    return ShiftGCN(
        cfg.model.encoder,
        num_classes=num_classes,
        num_joints=num_joints,
        max_bodies=cfg.data.max_bodies,
    )


def pretrain_encoder(
    cfg: Config,
    table: SkeletonTable,
    class_split: ClassSplit,
    samples: dict[str, np.ndarray],
    out_dir: Path,
    progress: bool = True,
) -> Path:
    """Train the encoder classifier on the training classes; select on held-out seen samples.

    Resumable: `last.pt` in `out_dir` holds the state after each epoch. Writes `encoder.pt`
    (the selected weights, the resolved config and the selection record) atomically at the end.
    """
    final = out_dir / "encoder.pt"
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.run.device)
    torch.manual_seed(cfg.run.seed)
    training = np.asarray(class_split.training)
    remap = {int(c): i for i, c in enumerate(training)}
    encoder = build_encoder(cfg, len(training), table.info.num_joints).to(device)
    train_rows = samples["train"]
    train_labels = np.array([remap[int(c)] for c in table.labels[train_rows]])
    heldout_rows = samples["val_seen"]
    heldout_labels = np.array([remap[int(c)] for c in table.labels[heldout_rows]])
    optimizer = torch.optim.SGD(
        encoder.parameter_groups(cfg.pretrain.weight_decay),
        lr=cfg.pretrain.lr,
        momentum=cfg.pretrain.momentum,
        nesterov=True,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.pretrain.lr_milestones), gamma=cfg.pretrain.lr_decay
    )
    start_epoch, best = 1, {"accuracy": -1.0, "epoch": 0, "state": None}
    last = out_dir / "last.pt"
    if last.is_file():
        state = torch.load(last, map_location=device, weights_only=False)
        encoder.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        _log(progress, f"stage 1: resuming after epoch {state['epoch']}")
    dataset = _ClipDataset(cfg, table, train_rows, train_labels, augment=True)
    for epoch in range(start_epoch, cfg.pretrain.epochs + 1):
        dataset.epoch = epoch
        generator = torch.Generator().manual_seed(cfg.run.seed * 100003 + epoch)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=cfg.pretrain.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=cfg.run.num_workers,
            drop_last=len(dataset) > cfg.pretrain.batch_size,
        )
        encoder.train()
        total_loss, total = 0.0, 0
        started = time.perf_counter()
        for clips, labels in tqdm(
            loader, desc=f"stage 1 epoch {epoch}", disable=not progress, leave=False
        ):
            clips, labels = clips.to(device), labels.to(device)
            loss = functional.cross_entropy(encoder(clips), labels)
            if not torch.isfinite(loss):
                raise DivergenceError(
                    f"stage 1 epoch {epoch}: loss is {loss.item()}; lower pretrain.lr (now {cfg.pretrain.lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(labels)
            total += len(labels)
        scheduler.step()
        accuracy = encoder_accuracy(cfg, encoder, table, heldout_rows, heldout_labels, device)
        if accuracy > best["accuracy"]:
            best = {
                "accuracy": accuracy,
                "epoch": epoch,
                "state": copy.deepcopy(encoder.state_dict()),
            }
        _log(
            progress,
            f"stage 1 epoch {epoch}/{cfg.pretrain.epochs}: loss {total_loss / max(total, 1):.4f}, "
            f"held-out seen accuracy {accuracy:.3f} ({time.perf_counter() - started:.1f} s)",
        )
        with atomic_path(last) as temporary:
            torch.save(
                {
                    "model": encoder.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "best": best,
                },
                temporary,
            )
    with atomic_path(final) as temporary:
        torch.save(
            {
                "model": best["state"],
                "config": cfg.to_dict(),
                "training_classes": list(class_split.training),
                "selected_epoch": best["epoch"],
                "heldout_accuracy": best["accuracy"],
                "version": __version__,
            },
            temporary,
        )
    last.unlink(missing_ok=True)
    return final


@torch.no_grad()
def encoder_accuracy(
    cfg: Config,
    encoder: ShiftGCN,
    table: SkeletonTable,
    rows: np.ndarray,
    labels: np.ndarray,
    device: torch.device,
) -> float:
    encoder.eval()
    correct = 0
    for start in range(0, len(rows), cfg.pretrain.batch_size):
        batch = rows[start : start + cfg.pretrain.batch_size]
        clips = clip_batch(cfg, table, batch, np.zeros(len(batch), dtype=np.int64)).to(device)
        predictions = encoder(clips).argmax(1).cpu().numpy()
        correct += int((predictions == labels[start : start + len(batch)]).sum())
    return correct / max(len(rows), 1)


def load_encoder(cfg: Config, path: Path, num_joints: int, device: torch.device) -> ShiftGCN:
    saved = torch.load(path, map_location=device, weights_only=False)
    encoder = build_encoder(cfg, len(saved["training_classes"]), num_joints).to(device)
    encoder.load_state_dict(saved["model"])
    encoder.eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder


# --------------------------------------------------------------------------------------------
# The feature cache


def feature_views(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Which preprocessing views each subset gets in the cache."""
    augmented = tuple(range(1, cfg.train.augmented_views + 1))
    views = {subset: (0,) for subset in SUBSETS}
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
    batch_size = 256
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


# --------------------------------------------------------------------------------------------
# Stage 2: the Neuron head


@dataclass
class FitResult:
    metrics: dict[str, float]
    best_epoch: int
    run_dir: Path
    classes: dict[str, Any]


DEVICE_CACHE_SHARE = 0.25
"""`run.cache_on_device: auto` copies the feature cache to the GPU when it takes at most this
share of the run's part of the GPU memory (the rest is the head, its activations and the
framework's own allocations)."""


def cache_fits_on_device(
    mode: str, cache_bytes: int, device_bytes: int, gpu_fraction: float
) -> bool:
    """Whether stage 2 copies the whole feature cache to the GPU (`run.cache_on_device`)."""
    if mode != "auto":
        return mode == "always"
    return cache_bytes <= DEVICE_CACHE_SHARE * device_bytes * gpu_fraction


class FeatureSource:
    """Where stage 2 gets its features: the memory-mapped cache, or the frozen encoder."""

    def __init__(self, cfg: Config, prepared: Prepared, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.table = open_feature_table(prepared.feature_cache_path)
        if self.table.info.get("key") != prepared.cache_key:
            raise CheckpointError(
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


def build_head(cfg: Config, feature_table: FeatureTable, text_dim: int) -> NeuronHead:
    torch.manual_seed(cfg.run.seed)
    return NeuronHead(
        cfg.model,
        feature_channels=feature_table.channels,
        text_dim=text_dim,
        num_joints=feature_table.joints,
        feature_frames=feature_table.frames,
    )


def train_one_epoch(
    cfg: Config,
    head: NeuronHead,
    source: FeatureSource,
    text: tuple[torch.Tensor, torch.Tensor],
    training: tuple[int, ...],
    optimizer: torch.optim.Optimizer,
    epoch: int,
) -> dict[str, float]:
    """One pass over the training samples; each sample reads one of its cached views."""
    table = source.table
    clean = table.select("train", view=0)
    augmented = [table.select("train", view=v) for v in range(1, cfg.train.augmented_views + 1)]
    generator = np.random.default_rng([cfg.run.seed, epoch])
    order = generator.permutation(len(clean))
    chosen_view = generator.integers(0, len(augmented), size=len(clean)) if augmented else None
    remap = torch.full((int(max(table.labels.max(), max(training))) + 1,), -1, dtype=torch.long)
    remap[list(training)] = torch.arange(len(training))
    spatial_text = text[0][:, list(training)]  # (R, K_train, Q, D)
    temporal_text = text[1][:, list(training)]  # (R, K_train, Q, D)
    head.train()
    autocast = source.device.type == "cuda" and cfg.run.bf16
    total_loss, total = 0.0, 0
    for start in range(0, len(order), cfg.train.batch_size):
        positions = order[start : start + cfg.train.batch_size]
        if chosen_view is None:
            indices = clean[positions]
        else:
            indices = np.array([augmented[chosen_view[p]][p] for p in positions])
        joint, frame = source.features(indices)
        labels = remap[torch.from_numpy(table.labels[indices])].to(source.device)
        with torch.autocast(source.device.type, dtype=torch.bfloat16, enabled=autocast):
            output = head(joint, frame)
            spatial_logits, temporal_logits = class_logits(
                output, spatial_text, temporal_text, cfg.model.logit_scale
            )
            loss = neuron_loss(spatial_logits, temporal_logits, labels, cfg.model)
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"epoch {epoch}: the stage-2 loss is {loss.item()} (batch at sample {start}); lower train.lr "
                f"(now {cfg.train.lr}) or model.logit_scale (now {cfg.model.logit_scale})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.gradient_clip > 0:
            torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.train.gradient_clip)
        optimizer.step()
        total_loss += loss.item() * len(indices)
        total += len(indices)
    return {"train/loss": total_loss / max(total, 1)}


@torch.no_grad()
def predict_logits(
    cfg: Config,
    head: NeuronHead,
    source: FeatureSource,
    text: tuple[torch.Tensor, torch.Tensor],
    indices: np.ndarray,
    classes: tuple[int, ...],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-step logits over `classes` for cache rows `indices`: (S, N, K) per branch."""
    head.eval()
    spatial_text = text[0][:, list(classes)]  # (R, K, Q, D)
    temporal_text = text[1][:, list(classes)]  # (R, K, Q, D)
    spatial_parts, temporal_parts = [], []
    for start in range(0, len(indices), 512):
        joint, frame = source.features(indices[start : start + 512])
        spatial, temporal = class_logits(
            head(joint, frame), spatial_text, temporal_text, cfg.model.logit_scale
        )
        if spatial is not None:
            spatial_parts.append(spatial.float().cpu())
        if temporal is not None:
            temporal_parts.append(temporal.float().cpu())
    spatial = torch.cat(spatial_parts, dim=1).numpy() if spatial_parts else None  # (S, N, K)
    temporal = torch.cat(temporal_parts, dim=1).numpy() if temporal_parts else None  # (S, N, K)
    return spatial, temporal


def evaluate(
    cfg: Config,
    head: NeuronHead,
    source: FeatureSource,
    text: tuple[torch.Tensor, torch.Tensor],
    prefix: str,
    subsets: tuple[str, str],
    seen: tuple[int, ...],
    unseen: tuple[int, ...],
    gamma: dict[str, float] | None,
    view: int = 0,
) -> tuple[dict[str, float], dict[str, float]]:
    """ZSL/GZSL metrics of one evaluation split; `gamma=None` calibrates on it."""
    indices = np.concatenate([source.table.select(s, view=view) for s in subsets])
    classes = tuple(sorted(seen + unseen))
    spatial, temporal = predict_logits(cfg, head, source, text, indices, classes)
    return evaluate_split(
        prefix,
        spatial,
        temporal,
        source.table.labels[indices],
        seen_classes=seen,
        unseen_classes=unseen,
        all_classes_order=classes,
        fusion=cfg.eval.fusion,
        gamma=gamma,
        grid=cfg.eval.gamma_grid or None,
    )


def _parity_metrics(
    cfg: Config,
    head: NeuronHead,
    source: FeatureSource,
    text: tuple[torch.Tensor, torch.Tensor],
    split: ClassSplit,
) -> dict[str, float]:
    """The reference protocol on randomly augmented test inputs (paper_parity only)."""
    indices = np.concatenate([source.table.select(s, view=1) for s in ("test_seen", "test_unseen")])
    classes = tuple(sorted(split.training + split.unseen))
    spatial, temporal = predict_logits(cfg, head, source, text, indices, classes)
    return paper_parity_metrics(
        spatial, temporal, source.table.labels[indices], split.training, split.unseen, classes
    )


def _state_path(checkpoint_dir: Path) -> Path:
    return checkpoint_dir / "state.pt"


def _comparable(plain: dict[str, Any]) -> dict[str, Any]:
    """Config sections that must match for a checkpoint to resume (not where or how it runs)."""
    return {k: v for k, v in plain.items() if k != "run"} | {"seed": plain["run"]["seed"]}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')}: checkpoint {a!r}, now {b!r}"]


def load_checkpoint(cfg: Config, checkpoint_dir: Path) -> dict[str, Any]:
    path = _state_path(Path(checkpoint_dir))
    if not path.is_file():
        raise CheckpointError(
            f"{checkpoint_dir}: no state.pt; pass a checkpoint directory written by `neuron train`"
        )
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = config_from_plain(state["config"])
    differences = _differences(_comparable(saved.to_dict()), _comparable(cfg.to_dict()))
    if differences:
        raise CheckpointError(
            f"{checkpoint_dir}: this checkpoint was written with another config; differences: "
            + "; ".join(differences[:5])
            + ". Resume with the checkpoint's config (its config.yaml) or start a new run."
        )
    return state


def fit(
    cfg: Config,
    report: Reporter | None = None,
    *,
    run_dir: str | Path,
    resume_from: str | Path | None = None,
    prepared: Prepared | None = None,
    progress: bool = False,
    replay: bool = False,
) -> FitResult:
    """Stage 2. Per epoch: train, validate on pseudo-unseen classes, checkpoint, report.

    After the last epoch, the epoch chosen by `eval.selection_metric` is evaluated once on the
    unseen test classes; those metrics ride on the last report and are returned.

    Resuming from a checkpoint of the last epoch trains nothing and reports that epoch's metrics
    again (its consumer may have missed them). `replay` also reports the checkpoint's epoch
    first when epochs remain (a checkpoint whose report may never have been received).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", dump_yaml(cfg))
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    prepared = prepared or prepare(cfg, progress=progress)
    device = resolve_device(cfg.run.device)
    side = load_side_information_file(prepared.side_information_path)
    text = (side.spatial.to(device), side.temporal.to(device))
    source = FeatureSource(cfg, prepared, device)
    split = prepared.class_split
    head = build_head(cfg, source.table, side.dim).to(device)
    optimizer = torch.optim.SGD(
        head.parameters(),
        lr=cfg.train.lr,
        momentum=cfg.train.momentum,
        nesterov=True,
        weight_decay=cfg.train.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.train.lr_milestones), gamma=cfg.train.lr_decay
    )
    selection = cfg.eval.selection_metric
    best: dict[str, Any] = {
        "value": -math.inf,
        "epoch": 0,
        "state": None,
        "gamma": None,
        "metrics": {},
    }
    parity_best: dict[str, float] = {}
    start_epoch = 1
    if resume_from is not None:
        state = load_checkpoint(cfg, Path(resume_from))
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best, parity_best, start_epoch = state["best"], state["parity_best"], state["epoch"] + 1
    chance = chance_levels(len(split.unseen), len(split.training))
    metrics: dict[str, float] = {}
    if resume_from is not None and (replay or start_epoch > cfg.train.epochs):
        # A report that may not have reached its consumer (a search driver killed after the
        # checkpoint was stored): report the checkpoint's metrics again.
        metrics = dict(state.get("metrics") or {})
        if not metrics:
            raise CheckpointError(
                f"{resume_from}: this checkpoint holds no metrics to report again (written by "
                "an older version); start a new run"
            )
        if report is not None:
            report(metrics, None)
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        started = time.perf_counter()
        metrics = {"epoch": float(epoch), "lr": optimizer.param_groups[0]["lr"]}
        metrics |= train_one_epoch(cfg, head, source, text, split.training, optimizer, epoch)
        scheduler.step()
        validation, gamma = evaluate(
            cfg,
            head,
            source,
            text,
            "val",
            ("val_seen", "val_unseen"),
            split.training,
            split.validation,
            None,
        )
        metrics |= validation
        # Ties go to the later epoch: the validation classes are few, so plateaus are common.
        if validation[selection] >= best["value"]:
            best = {
                "value": validation[selection],
                "epoch": epoch,
                "state": copy.deepcopy(head.state_dict()),
                "gamma": gamma,
                "metrics": dict(validation),
            }
        if cfg.eval.paper_parity:
            # The reference reads its best epoch off the test set; kept apart, never selects.
            for name, value in _parity_metrics(cfg, head, source, text, split).items():
                parity_best[name] = max(parity_best.get(name, -math.inf), value)
        metrics["epoch_seconds"] = time.perf_counter() - started
        if epoch == cfg.train.epochs:
            metrics |= _final_metrics(cfg, head, source, text, split, best, parity_best, chance)
        checkpoint = _save_checkpoint(
            cfg, run_dir, epoch, head, optimizer, scheduler, best, parity_best, metrics
        )
        if report is not None:
            report(metrics, checkpoint)
        for old in run_dir.glob("checkpoints/epoch-*"):
            if old != checkpoint:
                shutil.rmtree(old, ignore_errors=True)
    final = {
        k: v
        for k, v in metrics.items()
        if k.startswith(("test/", "chance/", "paper_parity/", "selected/"))
    }
    final |= {k: v for k, v in best["metrics"].items()}
    final["best_epoch"] = float(best["epoch"])
    result = FitResult(
        metrics=final, best_epoch=best["epoch"], run_dir=run_dir, classes=prepared.describe()
    )
    write_text_atomic(
        run_dir / "metrics.json", json.dumps(result.metrics | {"classes": result.classes}, indent=2)
    )
    return result


def _final_metrics(
    cfg: Config,
    head: NeuronHead,
    source: FeatureSource,
    text: tuple[torch.Tensor, torch.Tensor],
    split: ClassSplit,
    best: dict[str, Any],
    parity_best: dict[str, float],
    chance: dict[str, float],
) -> dict[str, float]:
    """The once-only test evaluation, on the selected epoch with the validation γ."""
    current = copy.deepcopy(head.state_dict())
    head.load_state_dict(best["state"])
    test, _ = evaluate(
        cfg,
        head,
        source,
        text,
        "test",
        ("test_seen", "test_unseen"),
        split.training,
        split.unseen,
        best["gamma"],
    )
    head.load_state_dict(current)
    selected = {f"selected/{k}": v for k, v in best["metrics"].items()}
    return test | selected | parity_best | chance | {"best_epoch": float(best["epoch"])}


def _save_checkpoint(
    cfg: Config,
    run_dir: Path,
    epoch: int,
    head: NeuronHead,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    best: dict[str, Any],
    parity_best: dict[str, float],
    metrics: dict[str, float],
) -> Path:
    """The epoch's resumable state and the metrics reported with it (reported again when a
    finished run is resumed, or on `replay`)."""
    checkpoint = run_dir / "checkpoints" / f"epoch-{epoch:04d}"
    with atomic_path(checkpoint) as temporary:
        temporary.mkdir()
        torch.save(
            {
                "head": head.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best": best,
                "parity_best": parity_best,
                "config": cfg.to_dict(),
                "version": __version__,
                "metrics": dict(metrics),
            },
            _state_path(temporary),
        )
        (temporary / "config.yaml").write_text(dump_yaml(cfg))
    return checkpoint
