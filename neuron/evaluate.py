"""Evaluation of the stage-2 head: logits over a set of classes, and the ZSL/GZSL metrics of
the validation split (pseudo-unseen classes; selects epochs and calibrates GZSL) or the test
split (unseen classes; evaluated once, at the end of a run)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neuron.config import Config
from neuron.extract import FeatureSource
from neuron.metrics import evaluate_split, paper_parity_metrics
from neuron.model import NeuronHead, class_logits
from neuron.splits import ClassSplit

EVALUATION_BATCH_SIZE = 512
"""Cache rows per forward pass when predicting; no gradients are kept, so it can be larger than
`train.batch_size`. It changes only memory and speed, never the numbers."""

ClassText = tuple[torch.Tensor, torch.Tensor]
"""Encoded side information on the device: spatial and temporal, each (R, K, Q, D)."""


@dataclass(frozen=True)
class EvaluationSplit:
    """Which samples an evaluation reads and which classes count as seen and unseen."""

    prefix: str
    """Metric name prefix: `val` or `test`."""
    subsets: tuple[str, str]
    """Feature-cache subsets with the seen and the unseen samples."""
    seen: tuple[int, ...]
    unseen: tuple[int, ...]

    @classmethod
    def validation(cls, split: ClassSplit) -> EvaluationSplit:
        """Held-out samples of the training classes against the pseudo-unseen classes."""
        return cls("val", ("val_seen", "val_unseen"), split.training, split.validation)

    @classmethod
    def test(cls, split: ClassSplit) -> EvaluationSplit:
        """Test samples of the training classes against the unseen classes."""
        return cls("test", ("test_seen", "test_unseen"), split.training, split.unseen)


@torch.no_grad()
def predict_logits(
    cfg: Config,
    head: NeuronHead,
    source: FeatureSource,
    text: ClassText,
    indices: np.ndarray,
    classes: tuple[int, ...],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-step logits over `classes` for cache rows `indices`: (S, N, K) per branch."""
    head.eval()
    spatial_text = text[0][:, list(classes)]  # (R, K, Q, D)
    temporal_text = text[1][:, list(classes)]  # (R, K, Q, D)
    spatial_parts: list[torch.Tensor] = []
    temporal_parts: list[torch.Tensor] = []
    for start in range(0, len(indices), EVALUATION_BATCH_SIZE):
        joint, frame = source.features(indices[start : start + EVALUATION_BATCH_SIZE])
        spatial, temporal = class_logits(
            head(joint, frame), spatial_text, temporal_text, cfg.model.logit_scale
        )
        if spatial is not None:
            spatial_parts.append(spatial.float().cpu())
        if temporal is not None:
            temporal_parts.append(temporal.float().cpu())
    return (
        torch.cat(spatial_parts, dim=1).numpy() if spatial_parts else None,  # (S, N, K)
        torch.cat(temporal_parts, dim=1).numpy() if temporal_parts else None,  # (S, N, K)
    )


def evaluate(
    cfg: Config,
    head: NeuronHead,
    source: FeatureSource,
    text: ClassText,
    split: EvaluationSplit,
    *,
    gamma: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """ZSL/GZSL metrics of one evaluation split, and the GZSL γ per branch: `gamma=None`
    calibrates γ on this split (validation), a given γ is applied as it is (test)."""
    indices = np.concatenate([source.table.select(s, view=0) for s in split.subsets])
    classes = tuple(sorted(split.seen + split.unseen))
    spatial, temporal = predict_logits(cfg, head, source, text, indices, classes)
    return evaluate_split(
        split.prefix,
        spatial,
        temporal,
        source.table.labels[indices],
        seen_classes=split.seen,
        unseen_classes=split.unseen,
        all_classes_order=classes,
        fusion=cfg.eval.fusion,
        gamma=gamma,
        grid=cfg.eval.gamma_grid or None,
    )


def paper_parity_evaluation(
    cfg: Config, head: NeuronHead, source: FeatureSource, text: ClassText, split: ClassSplit
) -> dict[str, float]:
    """The reference protocol on randomly augmented test inputs (`eval.paper_parity` only)."""
    indices = np.concatenate([source.table.select(s, view=1) for s in ("test_seen", "test_unseen")])
    classes = tuple(sorted(split.training + split.unseen))
    spatial, temporal = predict_logits(cfg, head, source, text, indices, classes)
    return paper_parity_metrics(
        spatial, temporal, source.table.labels[indices], split.training, split.unseen, classes
    )
