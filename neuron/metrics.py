"""Zero-shot evaluation metrics: top-1, branch fusion, calibrated stacking and the GZSL H.

Plain numpy on score matrices. Neuron gives every sample per-class logits from two branches
(spatial, temporal) at each of S evolution steps, arrays of shape (S, N, C); either branch may
be absent (`None`). Score columns are dataset class ids listed by `all_classes_order`.

The protocol (NEURON.md, "Evaluation, and the reference code's caveats"):

- ZSL: top-1 over unseen-class samples, classifying among the unseen classes only.
- GZSL: classify among seen ∪ unseen with calibrated stacking (subtract γ from the seen-class
  scores) and report seen accuracy S, unseen accuracy U and H = 2SU/(S+U).
- The branches are fused honestly (`fuse_scores`, sum of softmax scores by default). γ is chosen
  on the validation split of pseudo-unseen classes (`evaluate_split(..., gamma=None)`) and the
  returned γ values are reused unchanged on the test split.

`paper_parity_metrics` and `either_branch_correct` reproduce the reference code's protocol (an
either-branch oracle, γ searched on the test set); those numbers are optimistic by construction
and never used for selection.

Every argmax breaks ties towards the lowest column index (numpy's rule, as in the reference).
"""

from __future__ import annotations

import itertools
import typing
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from neuron.config import EvalConfig

FUSION_METHODS: tuple[str, ...] = typing.get_args(typing.get_type_hints(EvalConfig)["fusion"])
"""Valid `eval.fusion` names, read from `EvalConfig` so they are written in one place."""

BRANCHES: tuple[str, str] = ("spatial", "temporal")

PAPER_PARITY_GAMMAS: tuple[float, ...] = tuple(i / 100000 for i in range(20, 31))
"""The reference's calibration grid {2.0, 2.1, …, 3.0}×1e-4 (`main_match.py`), per branch."""


# --------------------------------------------------------------------------------------------
# Accuracies


def _check_scores(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (N, C) score matrix and (N,) column-index labels; return them as arrays."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected shape (N, C), got {scores.shape}")
    num_samples, num_columns = scores.shape
    if labels.shape != (num_samples,):
        raise ValueError(
            f"labels: expected shape ({num_samples},) to match scores {scores.shape}, got {labels.shape}"
        )
    if num_samples == 0:
        raise ValueError("no samples: an accuracy over an empty set is undefined")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer column indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= num_columns:
        raise ValueError(
            f"labels: column indices must be in [0, {num_columns}), got values in "
            f"[{labels.min()}, {labels.max()}]"
        )
    return scores, labels


def _correct(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) bool: whether each sample's top-1 column is its label."""
    return np.argmax(scores, axis=1) == labels


def top1_accuracy(scores: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of samples whose highest-scoring column is their label.

    Args:
        scores: (N, C) scores, higher is better.
        labels: (N,) column indices into `scores`.
    """
    scores, labels = _check_scores(scores, labels)
    return float(np.mean(_correct(scores, labels)))


def mean_class_accuracy(scores: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 accuracy averaged over the classes present in `labels` (each class weighs the same).

    Args:
        scores: (N, C) scores, higher is better.
        labels: (N,) column indices into `scores`.
    """
    scores, labels = _check_scores(scores, labels)
    correct = _correct(scores, labels)
    samples_per_class = np.bincount(labels, minlength=scores.shape[1])
    hits_per_class = np.bincount(labels, weights=correct, minlength=scores.shape[1])
    present = samples_per_class > 0
    return float(np.mean(hits_per_class[present] / samples_per_class[present]))


def _oracle_correct(branch_scores: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """(N,) bool: whether ANY of the branches' top-1 is the label (the reference's oracle)."""
    return np.logical_or.reduce([_correct(scores, labels) for scores in branch_scores])


def either_branch_correct(spatial: ArrayLike, temporal: ArrayLike, labels: ArrayLike) -> float:
    """The reference's oracle accuracy: a sample counts if EITHER branch's top-1 is right.

    Only for the clearly labelled `paper_parity/*` metrics: choosing the right branch per sample
    needs the label, so this is an upper bound on any real fused classifier, not an accuracy.

    Args:
        spatial: (N, C) spatial-branch scores.
        temporal: (N, C) temporal-branch scores.
        labels: (N,) column indices.
    """
    spatial, labels = _check_scores(spatial, labels)
    temporal, _ = _check_scores(temporal, labels)
    if spatial.shape != temporal.shape:
        raise ValueError(
            f"spatial scores {spatial.shape} and temporal scores {temporal.shape} differ in shape"
        )
    return float(np.mean(_oracle_correct([spatial, temporal], labels)))


def harmonic_mean(seen: float, unseen: float) -> float:
    """H = 2SU/(S+U) of the seen and unseen accuracies; 0 when both are 0 (never NaN)."""
    if seen < 0 or unseen < 0:
        raise ValueError(
            f"harmonic_mean: accuracies must be >= 0, got seen={seen}, unseen={unseen}"
        )
    total = seen + unseen
    return 0.0 if total == 0 else float(2 * seen * unseen / total)


def chance_levels(num_unseen: int, num_seen: int) -> dict[str, float]:
    """Accuracies of a uniformly random guess, to read the real metrics against.

    ZSL guesses among the unseen classes; GZSL among all of them, so its seen accuracy, unseen
    accuracy and H are all 1/(seen + unseen).
    """
    if num_unseen < 1 or num_seen < 0:
        raise ValueError(
            f"chance_levels: need num_unseen >= 1 and num_seen >= 0, got {num_unseen} and {num_seen}"
        )
    gzsl = 1.0 / (num_seen + num_unseen)
    return {
        "chance/zsl": 1.0 / num_unseen,
        "chance/gzsl_seen": gzsl,
        "chance/gzsl_unseen": gzsl,
        "chance/gzsl_h": gzsl,
    }


# --------------------------------------------------------------------------------------------
# Scores and fusion


def softmax(logits: ArrayLike, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (the maximum is subtracted before exponentiating)."""
    logits = np.asarray(logits)
    logits = logits.astype(np.result_type(logits.dtype, np.float32), copy=False)
    exp = np.exp(logits - np.max(logits, axis=axis, keepdims=True))
    return exp / np.sum(exp, axis=axis, keepdims=True)


def _log_softmax(logits: ArrayLike, axis: int = -1) -> np.ndarray:
    logits = np.asarray(logits)
    logits = logits.astype(np.result_type(logits.dtype, np.float32), copy=False)
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _branch_scores(logits: np.ndarray, method: str) -> np.ndarray:
    """One branch's (N, C) logits turned into the scores that `method` adds up."""
    match method:
        case "sum_logits":
            return logits
        case "product_softmax":
            return _log_softmax(logits)
        case _:
            return softmax(logits)


def fuse_scores(
    spatial: ArrayLike | None, temporal: ArrayLike | None, method: str = "sum_softmax"
) -> np.ndarray:
    """Fuse the two branches' (N, C) logits into one (N, C) score matrix.

    Methods (`eval.fusion`):
        sum_softmax: softmax(spatial) + softmax(temporal), the default.
        sum_logits: spatial + temporal.
        product_softmax: log_softmax(spatial) + log_softmax(temporal), i.e. the product of the
            probabilities in log space.
        spatial / temporal: that branch's softmax alone (softmax keeps the top-1 and puts γ on
            the same probability scale as the reference).

    A missing branch (`None`) is left out of the sums, so the other branch's transformed
    scores are returned; asking for a single branch that is missing is an error.
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"fusion method {method!r}: must be one of {', '.join(FUSION_METHODS)}")
    if method in BRANCHES:
        chosen = spatial if method == "spatial" else temporal
        if chosen is None:
            other = "temporal" if method == "spatial" else "spatial"
            raise ValueError(
                f"eval.fusion={method!r} needs the {method} branch's scores, but that branch is "
                f"absent (model.branches excludes it); use eval.fusion={other} or sum_softmax"
            )
        return softmax(chosen)
    present = [np.asarray(branch) for branch in (spatial, temporal) if branch is not None]
    if not present:
        raise ValueError(
            "fuse_scores: both branches are None; at least one branch's scores are needed"
        )
    if len(present) == 2 and present[0].shape != present[1].shape:
        raise ValueError(
            f"spatial scores {present[0].shape} and temporal scores {present[1].shape} differ in shape"
        )
    scores = [_branch_scores(branch, method) for branch in present]
    return scores[0] if len(scores) == 1 else scores[0] + scores[1]


# --------------------------------------------------------------------------------------------
# GZSL calibration


def _check_seen_columns(seen_columns: ArrayLike, num_columns: int) -> np.ndarray:
    mask = np.asarray(seen_columns)
    if mask.dtype != bool or mask.shape != (num_columns,):
        raise ValueError(
            f"seen_columns: expected a bool mask of shape ({num_columns},), got dtype {mask.dtype} "
            f"and shape {mask.shape}"
        )
    return mask


def calibrated_stacking(scores: ArrayLike, seen_columns: ArrayLike, gamma: float) -> np.ndarray:
    """Subtract γ from the seen-class columns of (N, C) scores (Chao et al., 2016).

    A positive γ moves predictions from seen to unseen classes; γ = 0 leaves scores unchanged.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected shape (N, C), got {scores.shape}")
    mask = _check_seen_columns(seen_columns, scores.shape[1])
    return np.where(mask, scores - gamma, scores)


class _GroupBest(NamedTuple):
    """Per sample, the best seen and the best unseen column and their scores, (N,) each.

    Calibrated stacking shifts every seen score by the same γ, so the calibrated top-1 is always
    one of these two columns: computing them once makes each γ an O(N) comparison.
    """

    seen_column: np.ndarray
    seen_score: np.ndarray
    unseen_column: np.ndarray
    unseen_score: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray, seen_columns: np.ndarray) -> _GroupBest:
        seen_ids = np.flatnonzero(seen_columns)
        unseen_ids = np.flatnonzero(~seen_columns)
        seen_best = np.argmax(scores[:, seen_ids], axis=1)
        unseen_best = np.argmax(scores[:, unseen_ids], axis=1)
        rows = np.arange(scores.shape[0])
        return cls(
            seen_column=seen_ids[seen_best],
            seen_score=scores[:, seen_ids][rows, seen_best],
            unseen_column=unseen_ids[unseen_best],
            unseen_score=scores[:, unseen_ids][rows, unseen_best],
        )

    def top1(self, gamma: float) -> np.ndarray:
        """(N,) top-1 column after subtracting γ from the seen scores; ties → lower column."""
        seen_score = self.seen_score - gamma
        tied = np.minimum(self.seen_column, self.unseen_column)
        return np.where(
            seen_score > self.unseen_score,
            self.seen_column,
            np.where(seen_score < self.unseen_score, self.unseen_column, tied),
        )


def _prepare_gzsl(
    scores: ArrayLike, labels: ArrayLike, seen_columns: ArrayLike
) -> tuple[_GroupBest, np.ndarray, np.ndarray]:
    """Validated GZSL inputs: the per-group best columns, the labels and the seen-sample mask."""
    scores, labels = _check_scores(scores, labels)
    mask = _check_seen_columns(seen_columns, scores.shape[1])
    seen_samples = mask[labels]
    if not seen_samples.any():
        raise ValueError("GZSL: no samples of seen classes; seen accuracy and H need at least one")
    if seen_samples.all():
        raise ValueError(
            "GZSL: no samples of unseen classes; unseen accuracy and H need at least one"
        )
    return _GroupBest.of(scores, mask), labels, seen_samples


def _gzsl_at(
    best: _GroupBest, labels: np.ndarray, seen_samples: np.ndarray, gamma: float
) -> tuple[float, float, float]:
    correct = best.top1(gamma) == labels
    seen = float(np.mean(correct[seen_samples]))
    unseen = float(np.mean(correct[~seen_samples]))
    return seen, unseen, harmonic_mean(seen, unseen)


def gzsl_accuracies(
    scores: ArrayLike, labels: ArrayLike, seen_columns: ArrayLike, gamma: float
) -> tuple[float, float, float]:
    """GZSL (seen accuracy, unseen accuracy, H) after calibrated stacking with `gamma`.

    Every sample is classified among ALL columns (the top-1 of
    `calibrated_stacking(scores, seen_columns, gamma)`); seen accuracy averages over the samples
    whose true column is seen, unseen accuracy over the others.

    Args:
        scores: (N, C) scores over seen ∪ unseen columns.
        labels: (N,) column indices.
        seen_columns: (C,) bool, True for the seen-class columns.
        gamma: subtracted from the seen-class scores.
    """
    return _gzsl_at(*_prepare_gzsl(scores, labels, seen_columns), gamma)


def gamma_grid(scores: ArrayLike, seen_columns: ArrayLike, num: int = 41) -> np.ndarray:
    """Default γ candidates, sorted: `num` values spanning where predictions change, plus 0.

    A sample's prediction moves from a seen to an unseen class as γ passes its margin (best
    seen score − best unseen score), so the grid runs from the smallest to the largest margin
    over the samples. Labels are not needed.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"scores: expected a non-empty (N, C) matrix, got shape {scores.shape}")
    mask = _check_seen_columns(seen_columns, scores.shape[1])
    if not mask.any() or mask.all():
        raise ValueError("gamma_grid: needs at least one seen and one unseen column")
    if num < 2:
        raise ValueError(f"gamma_grid: num={num}; must be >= 2")
    best = _GroupBest.of(scores, mask)
    margins = best.seen_score - best.unseen_score
    return np.union1d(np.linspace(margins.min(), margins.max(), num), [0.0])


def choose_gamma(
    scores: ArrayLike, labels: ArrayLike, seen_columns: ArrayLike, grid: ArrayLike | None = None
) -> tuple[float, float, float, float]:
    """The γ in `grid` that maximises H on these samples: (gamma, seen, unseen, h).

    Ties go to the smallest |γ| (then the negative one), so the choice is deterministic and
    calibrates no more than needed. Call this on the validation split only.

    Args:
        scores: (N, C) scores over seen ∪ unseen columns.
        labels: (N,) column indices.
        seen_columns: (C,) bool, True for the seen-class columns.
        grid: γ candidates; None: `gamma_grid(scores, seen_columns)`.
    """
    prepared = _prepare_gzsl(scores, labels, seen_columns)
    candidates = (
        gamma_grid(scores, seen_columns)
        if grid is None
        else np.asarray(grid, dtype=np.float64).ravel()
    )
    if candidates.size == 0:
        raise ValueError(
            "choose_gamma: the γ grid is empty; give at least one candidate (eval.gamma_grid)"
        )
    best: tuple[float, float, float, float] | None = None
    for gamma in sorted(candidates.tolist(), key=lambda value: (abs(value), value)):
        seen, unseen, h = _gzsl_at(*prepared, gamma)
        if best is None or h > best[3]:
            best = (float(gamma), seen, unseen, h)
    assert best is not None
    return best


# --------------------------------------------------------------------------------------------
# Evaluating one split


def _check_branches(
    spatial: ArrayLike | None, temporal: ArrayLike | None, labels: ArrayLike
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The present branches' (S, N, C) logits as float64, keyed by branch, and the (N,) labels."""
    branches = {
        name: np.asarray(logits, dtype=np.float64)
        for name, logits in zip(BRANCHES, (spatial, temporal), strict=True)
        if logits is not None
    }
    if not branches:
        raise ValueError("both branches are None; at least one branch's logits are needed")
    labels = np.asarray(labels)
    for name, logits in branches.items():
        if logits.ndim != 3 or logits.shape[0] == 0:
            raise ValueError(
                f"{name} logits: expected shape (S, N, C) with S >= 1, got {logits.shape}"
            )
        if logits.shape[1] != labels.shape[0]:
            raise ValueError(
                f"{name} logits {logits.shape} have {logits.shape[1]} samples but there are {labels.shape[0]} labels"
            )
    if len({logits.shape[2] for logits in branches.values()}) > 1:
        raise ValueError(
            f"the branches have different numbers of columns: spatial {branches['spatial'].shape}, temporal {branches['temporal'].shape}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels: expected (N,) integer class ids, got shape {labels.shape} and dtype {labels.dtype}"
        )
    return branches, labels


def _columns_of(all_classes_order: tuple[int, ...], classes: set[int]) -> np.ndarray:
    """Positions, in column order, of the columns whose class id is in `classes`."""
    return np.array(
        [column for column, class_id in enumerate(all_classes_order) if class_id in classes],
        dtype=np.int64,
    )


def _relabel(labels: np.ndarray, column_classes: np.ndarray) -> np.ndarray:
    """Dataset class ids → indices into `column_classes` (every label must be one of them)."""
    sorter = np.argsort(column_classes)
    return sorter[np.searchsorted(column_classes, labels, sorter=sorter)]


def _check_classes(
    labels: np.ndarray,
    seen_classes: tuple[int, ...],
    unseen_classes: tuple[int, ...],
    all_classes_order: tuple[int, ...],
    num_columns: int,
) -> None:
    if len(all_classes_order) != num_columns:
        raise ValueError(
            f"all_classes_order lists {len(all_classes_order)} class ids but the logits have {num_columns} columns"
        )
    if len(set(all_classes_order)) != len(all_classes_order):
        raise ValueError(f"all_classes_order={list(all_classes_order)} repeats a class id")
    if not seen_classes or not unseen_classes:
        raise ValueError(
            f"seen_classes={list(seen_classes)} and unseen_classes={list(unseen_classes)}: both must be non-empty"
        )
    overlap = sorted(set(seen_classes) & set(unseen_classes))
    if overlap:
        raise ValueError(
            f"classes {overlap} are both seen and unseen; the two sets must be disjoint"
        )
    without_column = sorted((set(seen_classes) | set(unseen_classes)) - set(all_classes_order))
    if without_column:
        raise ValueError(f"classes {without_column} have no score column in all_classes_order")
    unknown = sorted(set(np.unique(labels).tolist()) - set(seen_classes) - set(unseen_classes))
    if unknown:
        raise ValueError(
            f"labels contain class ids {unknown} that are neither seen nor unseen in this split; "
            "pass only the samples of seen_classes ∪ unseen_classes"
        )


class _Split(NamedTuple):
    """One split's samples and columns, as ZSL and GZSL see them."""

    branches: dict[str, np.ndarray]
    """The present branches' (S, N, C_all) logits, float64."""
    unseen_samples: np.ndarray
    """(N,) bool: the sample's class is unseen."""
    zsl_columns: np.ndarray
    """Positions of the unseen-class columns."""
    zsl_labels: np.ndarray
    """(N_unseen,) label of each unseen-class sample as an index into `zsl_columns`."""
    gzsl_columns: np.ndarray
    """Positions of the seen ∪ unseen columns (other classes' columns are ignored)."""
    seen_columns: np.ndarray
    """(len(gzsl_columns),) bool: the GZSL column is a seen class."""
    gzsl_labels: np.ndarray
    """(N,) label of each sample as an index into `gzsl_columns`."""


def _split(
    prefix: str,
    spatial: ArrayLike | None,
    temporal: ArrayLike | None,
    labels: ArrayLike,
    seen_classes: tuple[int, ...],
    unseen_classes: tuple[int, ...],
    all_classes_order: tuple[int, ...],
) -> _Split:
    """Validate a split's logits and classes and map dataset class ids to score columns."""
    branches, labels = _check_branches(spatial, temporal, labels)
    num_columns = next(iter(branches.values())).shape[2]
    _check_classes(labels, seen_classes, unseen_classes, all_classes_order, num_columns)
    unseen_samples = np.isin(labels, unseen_classes)
    if not unseen_samples.any():
        raise ValueError(
            f"{prefix}: no samples of the unseen classes {list(unseen_classes)}; ZSL and GZSL need some"
        )
    if unseen_samples.all():
        raise ValueError(
            f"{prefix}: no samples of the seen classes {list(seen_classes)}; GZSL needs some"
        )
    order = np.asarray(all_classes_order, dtype=np.int64)
    zsl_columns = _columns_of(all_classes_order, set(unseen_classes))
    gzsl_columns = _columns_of(all_classes_order, set(seen_classes) | set(unseen_classes))
    return _Split(
        branches=branches,
        unseen_samples=unseen_samples,
        zsl_columns=zsl_columns,
        zsl_labels=_relabel(labels[unseen_samples], order[zsl_columns]),
        gzsl_columns=gzsl_columns,
        seen_columns=np.isin(order[gzsl_columns], seen_classes),
        gzsl_labels=_relabel(labels, order[gzsl_columns]),
    )


def evaluate_split(
    prefix: str,
    spatial: np.ndarray | None,
    temporal: np.ndarray | None,
    labels: np.ndarray,
    seen_classes: tuple[int, ...],
    unseen_classes: tuple[int, ...],
    all_classes_order: tuple[int, ...],
    fusion: str = "sum_softmax",
    gamma: dict[str, float] | None = None,
    grid: ArrayLike | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """ZSL and GZSL metrics of one split (validation or test): (metrics, gamma_used).

    ZSL uses the unseen-class samples only and restricts the columns to the unseen classes, so a
    sample whose overall best score is a seen class still counts if it is right among the unseen.
    GZSL uses all samples (seen and unseen classes) and the columns seen ∪ unseen, calibrated by
    γ: with `gamma=None` each score kind ("fused", and each present branch's softmax) gets its own
    γ from `choose_gamma` on these samples (the validation split); otherwise the given dict (the
    validation split's `gamma_used`) is applied unchanged (the test split).

    Args:
        prefix: metric-name prefix, e.g. "val" or "test".
        spatial: (S, N, C_all) spatial logits per step, or None.
        temporal: (S, N, C_all) temporal logits per step, or None.
        labels: (N,) dataset class ids, each in seen_classes or unseen_classes.
        seen_classes: seen class ids of this split.
        unseen_classes: unseen class ids of this split.
        all_classes_order: the class id of each of the C_all columns.
        fusion: an `eval.fusion` method (see `fuse_scores`).
        gamma: None to choose γ here, or a dict keyed "fused" and each present branch.
        grid: γ candidates for `choose_gamma` (`eval.gamma_grid`); None or empty: `gamma_grid`.

    Returns:
        metrics: `{prefix}/zsl_top1` (fused, last step), `zsl_mean_class` (fused),
            `zsl_top1_{branch}` (last step), `zsl_top1_{branch}_step{i}` (i from 1, every step),
            `gzsl_seen`, `gzsl_unseen`, `gzsl_h`, `gzsl_gamma` (fused, last step) and
            `gzsl_h_{branch}`, for each present branch.
        gamma_used: γ per score kind, keyed "fused", "spatial", "temporal" (present branches).
    """
    split = _split(
        prefix, spatial, temporal, labels, seen_classes, unseen_classes, all_classes_order
    )
    if grid is not None and np.asarray(grid).size == 0:
        grid = None
    metrics: dict[str, float] = {}

    # Unseen-class samples, unseen-class columns: (S, N_unseen, C_unseen) per branch.
    zsl_logits = {
        name: logits[:, split.unseen_samples][:, :, split.zsl_columns]
        for name, logits in split.branches.items()
    }
    zsl_last = {name: logits[-1] for name, logits in zsl_logits.items()}  # (N_u, C_u)
    fused = fuse_scores(zsl_last.get("spatial"), zsl_last.get("temporal"), fusion)
    metrics[f"{prefix}/zsl_top1"] = top1_accuracy(fused, split.zsl_labels)
    metrics[f"{prefix}/zsl_mean_class"] = mean_class_accuracy(fused, split.zsl_labels)
    for name, logits in zsl_logits.items():
        metrics[f"{prefix}/zsl_top1_{name}"] = top1_accuracy(logits[-1], split.zsl_labels)
        for step, step_logits in enumerate(logits, start=1):
            metrics[f"{prefix}/zsl_top1_{name}_step{step}"] = top1_accuracy(
                step_logits, split.zsl_labels
            )

    # All samples, seen ∪ unseen columns, last step: (N, C_seen + C_unseen) per branch.
    last_logits = {
        name: logits[-1][:, split.gzsl_columns] for name, logits in split.branches.items()
    }
    scores = {
        "fused": fuse_scores(last_logits.get("spatial"), last_logits.get("temporal"), fusion),
        **{name: softmax(logits) for name, logits in last_logits.items()},
    }
    gamma_used: dict[str, float] = {}
    for kind, kind_scores in scores.items():
        if gamma is None:
            chosen, seen, unseen, h = choose_gamma(
                kind_scores, split.gzsl_labels, split.seen_columns, grid
            )
        elif kind not in gamma:
            raise ValueError(
                f"{prefix}: gamma has no entry {kind!r} (it has {sorted(gamma)}); pass the "
                "gamma_used dict that evaluate_split returned on the validation split"
            )
        else:
            chosen = float(gamma[kind])
            seen, unseen, h = gzsl_accuracies(
                kind_scores, split.gzsl_labels, split.seen_columns, chosen
            )
        gamma_used[kind] = chosen
        if kind == "fused":
            metrics[f"{prefix}/gzsl_seen"] = seen
            metrics[f"{prefix}/gzsl_unseen"] = unseen
            metrics[f"{prefix}/gzsl_h"] = h
            metrics[f"{prefix}/gzsl_gamma"] = chosen
        else:
            metrics[f"{prefix}/gzsl_h_{kind}"] = h
    return metrics, gamma_used


def paper_parity_metrics(
    spatial: np.ndarray | None,
    temporal: np.ndarray | None,
    labels: np.ndarray,
    seen_classes: tuple[int, ...],
    unseen_classes: tuple[int, ...],
    all_classes_order: tuple[int, ...],
) -> dict[str, float]:
    """The reference code's evaluation protocol on a TEST split, under `paper_parity/*` names.

    OPTIMISTIC BY CONSTRUCTION, NEVER USED FOR SELECTION. It reproduces `main_match.py`:

    - ZSL (`paper_parity/zsl_top1_either_branch`): last-step top-1 among the unseen classes,
      counting a sample correct if EITHER branch is right, an oracle that needs the label.
    - GZSL (`paper_parity/gzsl_seen`, `gzsl_unseen`, `gzsl_h`): each branch's last-step softmax
      over seen ∪ unseen, calibrated with its own γ from `PAPER_PARITY_GAMMAS`; every (γ_spatial,
      γ_temporal) pair is tried ON THE TEST SET and the pair with the highest either-branch
      oracle H is kept (the first one on ties, spatial γ in the outer loop, as in the reference).
      The chosen values are reported as `paper_parity/gzsl_gamma_{branch}`.

    Only for comparing with published numbers; honest numbers come from `evaluate_split`. With one
    branch absent the oracle reduces to that branch alone.

    Args:
        spatial: (S, N, C_all) spatial logits per step, or None.
        temporal: (S, N, C_all) temporal logits per step, or None.
        labels: (N,) dataset class ids of the test samples (seen and unseen classes).
        seen_classes: seen class ids.
        unseen_classes: unseen class ids.
        all_classes_order: the class id of each of the C_all columns.
    """
    split = _split(
        "paper_parity", spatial, temporal, labels, seen_classes, unseen_classes, all_classes_order
    )
    metrics: dict[str, float] = {}

    zsl_scores = [
        logits[-1][split.unseen_samples][:, split.zsl_columns] for logits in split.branches.values()
    ]
    metrics["paper_parity/zsl_top1_either_branch"] = float(
        np.mean(_oracle_correct(zsl_scores, split.zsl_labels))
    )

    # correct[name][g]: (N,) bool, the branch's calibrated top-1 with PAPER_PARITY_GAMMAS[g].
    correct = {}
    for name, logits in split.branches.items():
        best = _GroupBest.of(softmax(logits[-1][:, split.gzsl_columns]), split.seen_columns)
        correct[name] = [best.top1(gamma) == split.gzsl_labels for gamma in PAPER_PARITY_GAMMAS]
    best_h = -1.0
    for pair in itertools.product(range(len(PAPER_PARITY_GAMMAS)), repeat=len(correct)):
        oracle = np.logical_or.reduce(
            [correct[name][g] for name, g in zip(correct, pair, strict=True)]
        )
        seen = float(np.mean(oracle[~split.unseen_samples]))
        unseen = float(np.mean(oracle[split.unseen_samples]))
        h = harmonic_mean(seen, unseen)
        if h > best_h:
            best_h = h
            metrics["paper_parity/gzsl_seen"] = seen
            metrics["paper_parity/gzsl_unseen"] = unseen
            metrics["paper_parity/gzsl_h"] = h
            for name, g in zip(correct, pair, strict=True):
                metrics[f"paper_parity/gzsl_gamma_{name}"] = PAPER_PARITY_GAMMAS[g]
    return metrics
