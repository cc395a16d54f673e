"""Stage 2: the Neuron head trained on the frozen encoder's features, with honest selection.

    fit(cfg, report, ...)   Reports per-epoch metrics and a resumable checkpoint through
                            `report`; selects the epoch on the validation split (pseudo-unseen
                            classes carved from the seen ones) and evaluates the unseen test
                            classes once, on that epoch, at the end.

Class roles (see neuron.splits): `training` classes train both stages; `validation` classes
(pseudo-unseen, part of the seen classes) only select epochs and calibrate GZSL; `unseen` classes
are touched once, at the end. The GZSL test label space is training ∪ unseen classes.
Everything stage 2 reads is built beforehand by neuron.prepare.

With `eval.refit` or `eval.paper_parity`, a second stage 2 then trains on ALL seen classes and
samples (`neuron.prepare.prepare_all_seen`, GZSL over all classes): `refit/test/*` is its honest
test evaluation after the selected number of epochs with the validation γ, and `paper_parity/*`
the reference code's protocol over its epochs (`ParityChoice`).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuron import __version__
from neuron.atomic import atomic_path, write_text_atomic
from neuron.config import Config, config_from_plain, dump_yaml
from neuron.device import apply_threads, keep_host_memory, resolve_device
from neuron.evaluate import ClassText, EvaluationSplit, evaluate, paper_parity_evaluation
from neuron.extract import FeatureSource
from neuron.features import FeatureTable
from neuron.metrics import chance_levels
from neuron.model import NeuronHead, class_logits, neuron_loss
from neuron.optim import DivergenceError, sgd, step_schedule
from neuron.prepare import Prepared, load_side_information_file, prepare, prepare_all_seen
from neuron.safeload import load_torch_file, save_torch_file
from neuron.splits import ClassSplit

Reporter = Callable[[dict[str, float], Path | None], None]
"""`report(metrics, checkpoint)`: print on the CLI, `ray.tune.report` under Tune."""


class CheckpointError(ValueError):
    """A checkpoint does not belong to this configuration."""


@dataclass
class FitResult:
    """What a finished stage-2 run returns (and writes to `metrics.json`)."""

    metrics: dict[str, float]
    """Test metrics of the selected epoch, its validation metrics, chance levels, best_epoch."""
    best_epoch: int
    run_dir: Path
    classes: dict[str, Any]
    """Dataset, split, class lists and provenance (`Prepared.describe`)."""


@dataclass
class Selection:
    """The epoch chosen so far by `eval.selection_metric` on the validation split."""

    value: float = -math.inf
    """The selection metric of the chosen epoch."""
    epoch: int = 0
    """The chosen epoch (0: none yet)."""
    state: dict[str, torch.Tensor] | None = None
    """The head's weights after the chosen epoch."""
    gamma: dict[str, float] | None = None
    """GZSL calibration γ per branch, fitted on the validation split at the chosen epoch."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The chosen epoch's validation metrics."""
    encoder_state: dict[str, torch.Tensor] | None = None
    """The frozen encoder's state after the chosen epoch, when stage 2 changes it
    (`train.encoder_batchnorm: train` moves its BatchNorm running statistics)."""

    def consider(
        self,
        epoch: int,
        validation: dict[str, float],
        gamma: dict[str, float],
        head: NeuronHead,
        metric: str,
        encoder: torch.nn.Module | None = None,
    ) -> None:
        """Choose this epoch if its `metric` is at least the best so far. Ties go to the later
        epoch: the validation classes are few, so plateaus are common."""
        if validation[metric] >= self.value:
            self.value, self.epoch, self.gamma = validation[metric], epoch, gamma
            self.state = copy.deepcopy(head.state_dict())
            self.encoder_state = None if encoder is None else copy.deepcopy(encoder.state_dict())
            self.metrics = dict(validation)

    def to_state(self) -> dict[str, Any]:
        """Plain form stored in a checkpoint (key `best`)."""
        return {
            "value": self.value,
            "epoch": self.epoch,
            "state": self.state,
            "gamma": self.gamma,
            "metrics": self.metrics,
            "encoder_state": self.encoder_state,
        }

    @classmethod
    def from_state(cls, saved: dict[str, Any]) -> Selection:
        return cls(
            value=saved["value"],
            epoch=saved["epoch"],
            state=saved["state"],
            gamma=saved["gamma"],
            metrics=dict(saved["metrics"]),
            encoder_state=saved.get("encoder_state"),
        )


PARITY_EPOCH_RULE = "highest paper_parity/gzsl_h, earliest epoch on ties"
"""How `ParityChoice` picks the one epoch whose numbers `paper_parity/*` reports."""


@dataclass
class ParityChoice:
    """The one epoch whose reference-protocol numbers `paper_parity/*` reports.

    The reference (`main_match.py`) evaluates the test set after every epoch and prints that
    epoch's ZSL accuracy and its GZSL S, U and H at the γ pair with the best H; it never records
    a best epoch (its `best_acc` stays 0), so its tables are read off that log. Here the epoch
    is the one with the highest either-branch GZSL H (the earliest on ties), and every number
    reported (ZSL, S, U, H, both γ) is that epoch's, so H = 2SU/(S+U) holds for the triple.
    """

    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[int, dict[str, float]] = field(default_factory=dict)
    """Every epoch's reference-protocol numbers (written to `paper_parity_epochs.json`)."""

    def consider(self, epoch: int, metrics: dict[str, float]) -> None:
        self.history[epoch] = dict(metrics)
        if not self.metrics or metrics["paper_parity/gzsl_h"] > self.metrics["paper_parity/gzsl_h"]:
            self.epoch, self.metrics = epoch, dict(metrics)

    def reported(self) -> dict[str, float]:
        return self.metrics | {"paper_parity/epoch": float(self.epoch)} if self.epoch else {}


def build_head(cfg: Config, feature_table: FeatureTable, text_dim: int) -> NeuronHead:
    """The Neuron head sized for the cached features, initialised from `run.seed`."""
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
    text: ClassText,
    training: tuple[int, ...],
    optimizer: torch.optim.Optimizer,
    epoch: int,
) -> dict[str, float]:
    """One pass over the training samples. From the cache each sample reads one of its K cached
    augmented views (`draw_views`); through the encoder it gets a fresh augmentation."""
    table = source.table
    clean = table.select("train", view=0)
    augmented = [table.select("train", view=v) for v in range(1, cfg.train.augmented_views + 1)]
    order, chosen_view = draw_views(cfg.run.seed, epoch, len(clean), len(augmented))
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
        joint, frame = source.training_features(indices, epoch)
        labels = remap[torch.from_numpy(table.labels[indices])].to(source.device)
        with torch.autocast(source.device.type, dtype=torch.bfloat16, enabled=autocast):
            output = head(joint, frame)
            spatial_logits, temporal_logits = class_logits(
                output, spatial_text, temporal_text, cfg.model.logit_scale
            )
            loss = neuron_loss(spatial_logits, temporal_logits, labels, cfg.model)
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"epoch {epoch}: the stage-2 loss is {loss.item()} (batch at sample {start}); lower "
                f"train.optimizer.lr (now {cfg.train.optimizer.lr}) or model.logit_scale (now {cfg.model.logit_scale})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.gradient_clip > 0:
            torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.train.gradient_clip)
        optimizer.step()
        total_loss += loss.item() * len(indices)
        total += len(indices)
    return {"train/loss": total_loss / max(total, 1)}


def draw_views(
    seed: int, epoch: int, num_samples: int, num_views: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The epoch's sample order and, per sample, which of its K cached augmented views it reads
    (0-based, None without augmented views), both drawn from a generator seeded by
    (seed, epoch): the same seed gives the same views, other epochs other views."""
    generator = np.random.default_rng([seed, epoch])
    order = generator.permutation(num_samples)
    chosen = generator.integers(0, num_views, size=num_samples) if num_views else None
    return order, chosen


@dataclass
class Stage2:
    """Everything one stage-2 run trains and evaluates with."""

    cfg: Config
    split: ClassSplit
    text: ClassText
    source: FeatureSource
    head: NeuronHead
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @classmethod
    def build(cls, cfg: Config, prepared: Prepared) -> Stage2:
        device = resolve_device(cfg.run.device)
        side = load_side_information_file(prepared.side_information_path)
        source = FeatureSource(cfg, prepared, device)
        head = build_head(cfg, source.table, side.dim).to(device)
        optimizer = sgd(head.parameters(), cfg.train.optimizer)
        return cls(
            cfg=cfg,
            split=prepared.class_split,
            text=(side.spatial.to(device), side.temporal.to(device)),
            source=source,
            head=head,
            optimizer=optimizer,
            scheduler=step_schedule(optimizer, cfg.train.optimizer),
        )

    @property
    def changing_encoder(self) -> torch.nn.Module | None:
        """The frozen encoder when stage 2 changes its state (BatchNorm in train mode)."""
        if self.cfg.train.encoder_batchnorm == "train":
            return self.source.encoder
        return None

    def restore(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.changing_encoder is not None and state.get("encoder") is not None:
            self.changing_encoder.load_state_dict(state["encoder"])

    def train_epoch(self, epoch: int) -> dict[str, float]:
        metrics = {"epoch": float(epoch), "lr": self.optimizer.param_groups[0]["lr"]}
        metrics |= train_one_epoch(
            self.cfg, self.head, self.source, self.text, self.split.training, self.optimizer, epoch
        )
        self.scheduler.step()
        return metrics

    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        """Validation metrics and the γ calibrated on them."""
        return evaluate(
            self.cfg, self.head, self.source, self.text, EvaluationSplit.validation(self.split)
        )

    def test(self, selection: Selection) -> dict[str, float]:
        """The once-only test evaluation, on the selected epoch with the validation γ."""
        current = copy.deepcopy(self.head.state_dict())
        assert selection.state is not None, "test() before any epoch was selected"
        self.head.load_state_dict(selection.state)
        encoder = self.changing_encoder
        current_encoder = None if encoder is None else copy.deepcopy(encoder.state_dict())
        if encoder is not None and selection.encoder_state is not None:
            encoder.load_state_dict(selection.encoder_state)
        test, _ = evaluate(
            self.cfg,
            self.head,
            self.source,
            self.text,
            EvaluationSplit.test(self.split),
            gamma=selection.gamma,
        )
        self.head.load_state_dict(current)
        if encoder is not None and current_encoder is not None:
            encoder.load_state_dict(current_encoder)
        return test

    def paper_parity(self) -> dict[str, float]:
        return paper_parity_evaluation(self.cfg, self.head, self.source, self.text, self.split)


def reported_metric_names(cfg: Config, prepared: Prepared) -> set[str]:
    """The names of the metrics `fit` reports every epoch under `cfg`: the per-epoch keys plus
    those of one validation pass of the untrained head (the same code that reports them, so
    the list cannot drift from what training reports)."""
    validation, _ = Stage2.build(cfg, prepared).validate()
    selected = f"selected/{cfg.eval.selection_metric}"
    return {"epoch", "lr", "train/loss", "epoch_seconds", selected, *validation}


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
    """The state saved in `checkpoint_dir`; refused when it was written with another config."""
    path = _state_path(Path(checkpoint_dir))
    if not path.is_file():
        raise CheckpointError(
            f"{checkpoint_dir}: no state.pt; pass a checkpoint directory written by `neuron train`"
        )
    state = load_torch_file(
        path,
        "training checkpoint",
        "resume from another checkpoint directory (run_dir/checkpoints/epoch-NNNN) or start a "
        "new run",
    )
    if not isinstance(state, dict) or not {"config", "head", "epoch", "best"} <= set(state):
        raise CheckpointError(
            f"{path}: not a checkpoint written by `neuron train` (it lacks the keys config, "
            "head, epoch and best); resume from run_dir/checkpoints/epoch-NNNN or start a new run"
        )
    try:
        saved = config_from_plain(state["config"])
    except ValueError as error:
        raise CheckpointError(
            f"{path}: the checkpoint's config is not valid ({error}); start a new run"
        ) from error
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
    apply_threads(cfg.run.threads)
    with keep_host_memory():
        prepared = prepared or prepare(cfg, progress=progress)
        run = Stage2.build(cfg, prepared)
        selection, start_epoch = Selection(), 1
        metrics: dict[str, float] = {}
        if resume_from is not None:
            state = load_checkpoint(cfg, Path(resume_from))
            run.restore(state)
            selection = Selection.from_state(state["best"])
            start_epoch = state["epoch"] + 1
            if replay or start_epoch > cfg.train.epochs:
                metrics = _report_again(state, Path(resume_from), report)
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            metrics = _epoch(run, epoch, selection)
            if epoch == cfg.train.epochs and (cfg.eval.refit or cfg.eval.paper_parity):
                metrics |= all_seen_stage(cfg, prepared, selection, run_dir, progress)
            checkpoint = _save_checkpoint(run, run_dir, epoch, selection, metrics)
            if report is not None:
                report(metrics, checkpoint)
            for old in run_dir.glob("checkpoints/epoch-*"):
                if old != checkpoint:
                    shutil.rmtree(old, ignore_errors=True)
    return _result(run_dir, metrics, selection, prepared)


def _epoch(run: Stage2, epoch: int, selection: Selection) -> dict[str, float]:
    """Train one epoch, validate, update the selection (its value so far is reported as
    `selected/<eval.selection_metric>`); after the last epoch, test once and report every
    metric of the selected epoch as `selected/*`."""
    cfg = run.cfg
    started = time.perf_counter()
    metrics = run.train_epoch(epoch)
    validation, gamma = run.validate()
    metrics |= validation
    selection.consider(
        epoch, validation, gamma, run.head, cfg.eval.selection_metric, run.changing_encoder
    )
    metrics["epoch_seconds"] = time.perf_counter() - started
    # The selection so far, every epoch: what this run would return if it stopped now (a
    # scheduler that stops runs early compares them on it).
    metrics[f"selected/{cfg.eval.selection_metric}"] = selection.value
    if epoch == cfg.train.epochs:
        chance = chance_levels(len(run.split.unseen), len(run.split.training))
        selected = {f"selected/{k}": v for k, v in selection.metrics.items()}
        metrics |= run.test(selection) | selected | chance
        metrics["best_epoch"] = float(selection.epoch)
    return metrics


def all_seen_stage(
    cfg: Config, prepared: Prepared, selection: Selection, run_dir: Path, progress: bool = False
) -> dict[str, float]:
    """Stage 2 again, on ALL seen classes and samples (after the honest run has selected).

    `eval.refit`: after `selection.epoch` epochs (the count chosen on validation; the same
    schedule, so these are the first epochs of a longer run), the unseen test classes are
    evaluated once with the validation γ, GZSL over seen ∪ unseen: `refit/test/*`.
    `eval.paper_parity`: all `train.epochs` epochs run, each is evaluated with the reference's
    protocol on randomly augmented test inputs, and one epoch's numbers are reported
    (`ParityChoice`); every epoch's are written to `paper_parity_epochs.json`.
    """
    started = time.perf_counter()
    everything = prepare_all_seen(cfg, prepared, progress)
    run = Stage2.build(cfg, everything)
    epochs = cfg.train.epochs if cfg.eval.paper_parity else selection.epoch
    parity = ParityChoice()
    metrics: dict[str, float] = {}
    assert selection.gamma is not None, "all_seen_stage() before any epoch was selected"
    for epoch in range(1, epochs + 1):
        run.train_epoch(epoch)
        if cfg.eval.refit and epoch == selection.epoch:
            test, _ = evaluate(
                cfg,
                run.head,
                run.source,
                run.text,
                EvaluationSplit.test(run.split),
                gamma=selection.gamma,
            )
            metrics |= {f"refit/{name}": value for name, value in test.items()}
            metrics["refit/epochs"] = float(epoch)
            metrics["refit/training_classes"] = float(len(run.split.training))
        if cfg.eval.paper_parity:
            # Read off the test set, as the reference does; kept apart, never selects.
            parity.consider(epoch, run.paper_parity())
    if cfg.eval.paper_parity:
        metrics |= parity.reported()
        metrics["paper_parity/training_classes"] = float(len(run.split.training))
        write_text_atomic(
            run_dir / "paper_parity_epochs.json",
            json.dumps(
                {"rule": PARITY_EPOCH_RULE, "chosen_epoch": parity.epoch, "epochs": parity.history},
                indent=2,
            ),
        )
    metrics["all_seen/seconds"] = time.perf_counter() - started
    return metrics


def _report_again(
    state: dict[str, Any], checkpoint_dir: Path, report: Reporter | None
) -> dict[str, float]:
    """A report that may not have reached its consumer (a search driver killed after the
    checkpoint was stored): report the checkpoint's metrics again."""
    metrics = dict(state.get("metrics") or {})
    if not metrics:
        raise CheckpointError(
            f"{checkpoint_dir}: this checkpoint holds no metrics to report again (written by "
            "an older version); start a new run"
        )
    if report is not None:
        report(metrics, None)
    return metrics


def _result(
    run_dir: Path, metrics: dict[str, float], selection: Selection, prepared: Prepared
) -> FitResult:
    """The final metrics (test, chance, paper_parity, selected validation) → `metrics.json`."""
    final = {
        k: v
        for k, v in metrics.items()
        if k.startswith(("test/", "chance/", "paper_parity/", "selected/", "refit/", "all_seen/"))
    }
    final |= selection.metrics
    final["best_epoch"] = float(selection.epoch)
    result = FitResult(
        metrics=final, best_epoch=selection.epoch, run_dir=run_dir, classes=prepared.describe()
    )
    write_text_atomic(
        run_dir / "metrics.json", json.dumps(result.metrics | {"classes": result.classes}, indent=2)
    )
    return result


def _save_checkpoint(
    run: Stage2,
    run_dir: Path,
    epoch: int,
    selection: Selection,
    metrics: dict[str, float],
) -> Path:
    """The epoch's resumable state and the metrics reported with it (reported again when a
    finished run is resumed, or on `replay`)."""
    checkpoint = run_dir / "checkpoints" / f"epoch-{epoch:04d}"
    with atomic_path(checkpoint) as temporary:
        temporary.mkdir()
        save_torch_file(
            {
                "head": run.head.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "epoch": epoch,
                "best": selection.to_state(),
                "encoder": None
                if run.changing_encoder is None
                else run.changing_encoder.state_dict(),
                "config": run.cfg.to_dict(),
                "version": __version__,
                "metrics": {k: float(v) for k, v in metrics.items()},
            },
            _state_path(temporary),
        )
        (temporary / "config.yaml").write_text(dump_yaml(run.cfg))
    return checkpoint
