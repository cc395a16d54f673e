"""Stage 1: the Shift-GCN encoder trained as a classifier on the training classes, selected on
held-out samples of those classes, then frozen for stage 2.

`clip_batch` turns dataset rows into preprocessed clips; it is shared with the feature cache
(neuron.extract), so the cache and the encoder path of stage 2 see identical inputs.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as functional
from tqdm import tqdm

from neuron import __version__
from neuron.cache import file_fingerprint, log_progress, stable_hash
from neuron.config import Config
from neuron.dataset import SkeletonTable
from neuron.device import resolve_device
from neuron.encoder import ShiftGCN
from neuron.optim import DivergenceError, sgd, step_schedule
from neuron.preprocess import prepare_sequence
from neuron.safeload import load_torch_file, save_torch_file
from neuron.splits import ClassSplit

STAGE1_VIEW_OFFSET = 1000
"""Stage-1 epoch e draws augmentation view STAGE1_VIEW_OFFSET + e, so its random crops and
rotations never repeat the feature cache's augmented views 1..`train.augmented_views`."""

EPOCH_SEED_STRIDE = 100003
"""Stage-1 shuffling is seeded with seed * EPOCH_SEED_STRIDE + epoch: a prime above any epoch
count, so no two (seed, epoch) pairs share a shuffle order."""


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


class ClipDataset(torch.utils.data.Dataset):
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
        view = STAGE1_VIEW_OFFSET + self.epoch if self.augment else 0
        clip = clip_batch(self.cfg, self.table, self.rows[index : index + 1], np.array([view]))[0]
        return clip, int(self.labels[index])


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
    """Train the encoder classifier on the training classes; select on held-out seen samples
    (with none held out, keep the last epoch).

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
    settings = cfg.pretrain.optimizer
    optimizer = sgd(encoder.parameter_groups(settings.weight_decay), settings)
    scheduler = step_schedule(optimizer, settings)
    best: dict[str, Any] = {"accuracy": -1.0, "epoch": 0, "state": None}
    start_epoch = 1
    last = out_dir / "last.pt"
    if last.is_file():
        state = load_torch_file(
            last,
            "stage-1 resume state",
            f"delete {last} to train stage 1 from the start",
            map_location=device,
        )
        encoder.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        log_progress(progress, f"stage 1: resuming after epoch {state['epoch']}")
    dataset = ClipDataset(cfg, table, train_rows, train_labels, augment=True)
    for epoch in range(start_epoch, cfg.pretrain.epochs + 1):
        dataset.epoch = epoch
        generator = torch.Generator().manual_seed(cfg.run.seed * EPOCH_SEED_STRIDE + epoch)
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
                    f"stage 1 epoch {epoch}: loss is {loss.item()}; lower pretrain.optimizer.lr (now {settings.lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(labels)
            total += len(labels)
        scheduler.step()
        accuracy = encoder_accuracy(cfg, encoder, table, heldout_rows, heldout_labels, device)
        # Without held-out samples (the all-seen refit) the last epoch is kept: its epoch count
        # was selected beforehand on the honest split.
        if accuracy > best["accuracy"] or len(heldout_rows) == 0:
            best = {
                "accuracy": accuracy,
                "epoch": epoch,
                "state": copy.deepcopy(encoder.state_dict()),
            }
        log_progress(
            progress,
            f"stage 1 epoch {epoch}/{cfg.pretrain.epochs}: loss {total_loss / max(total, 1):.4f}, "
            f"held-out seen accuracy {accuracy:.3f} ({time.perf_counter() - started:.1f} s)",
        )
        save_torch_file(
            {
                "model": encoder.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best": best,
            },
            last,
        )
    save_torch_file(
        {
            "model": best["state"],
            "config": cfg.to_dict(),
            "training_classes": list(class_split.training),
            "selected_epoch": best["epoch"],
            "heldout_accuracy": best["accuracy"],
            "version": __version__,
        },
        final,
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
    saved = load_torch_file(
        path,
        "stage-1 encoder",
        f"delete {path} (it is rebuilt from the dataset) or point run.cache_dir elsewhere",
        map_location=device,
    )
    encoder = build_encoder(cfg, len(saved["training_classes"]), num_joints).to(device)
    encoder.load_state_dict(saved["model"])
    encoder.eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder
