"""Hand-computed checks of the zero-shot metrics on tiny score matrices."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from neuron import metrics
from neuron.config import EvalConfig
from neuron.metrics import (
    PAPER_PARITY_GAMMAS,
    calibrated_stacking,
    chance_levels,
    choose_gamma,
    either_branch_correct,
    evaluate_split,
    fuse_scores,
    gamma_grid,
    gzsl_accuracies,
    harmonic_mean,
    mean_class_accuracy,
    paper_parity_metrics,
    softmax,
    top1_accuracy,
)

# --------------------------------------------------------------------------------------------
# Accuracies

# Predictions [1, 0, 2, 0]: the last row ties columns 0 and 1, and ties go to the lower column.
SCORES = np.array(
    [
        [0.1, 0.5, 0.2],
        [0.9, 0.0, 0.1],
        [0.2, 0.3, 0.4],
        [0.3, 0.3, 0.1],
    ]
)
LABELS = np.array([1, 2, 2, 0])


def test_top1_accuracy_counts_argmax_hits_with_ties_to_lowest_column():
    assert top1_accuracy(SCORES, LABELS) == pytest.approx(3 / 4)


def test_mean_class_accuracy_weighs_each_class_equally():
    # class 0: 1/1, class 1: 1/1, class 2: 1/2 → (1 + 1 + 0.5) / 3
    assert mean_class_accuracy(SCORES, LABELS) == pytest.approx(2.5 / 3)


def test_mean_class_accuracy_ignores_classes_without_samples():
    scores = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    # class 0: 1/1, class 2: 1 of 2 → 0.75 (columns 1 and 3 have no samples)
    assert mean_class_accuracy(scores, np.array([0, 2, 2])) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.zeros((2, 3)), np.array([0, 1, 2]), "expected shape"),
        (np.zeros((2, 3)), np.array([0, 3]), r"must be in \[0, 3\)"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), "empty"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "integer"),
        (np.zeros(3), np.array([0]), r"\(N, C\)"),
    ],
)
def test_top1_accuracy_rejects_bad_inputs(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        top1_accuracy(scores, labels)


def test_either_branch_correct_is_the_union_of_the_branches_hits():
    labels = np.array([0, 1, 2, 0])
    spatial = np.eye(3)[[0, 0, 2, 1]]  # hits: T F T F
    temporal = np.eye(3)[[1, 1, 0, 2]]  # hits: F T F F
    assert top1_accuracy(spatial, labels) == 0.5
    assert top1_accuracy(temporal, labels) == 0.25
    assert either_branch_correct(spatial, temporal, labels) == 0.75


def test_either_branch_correct_rejects_mismatched_branches():
    with pytest.raises(ValueError, match="differ in shape"):
        either_branch_correct(np.zeros((2, 3)), np.zeros((2, 4)), np.array([0, 1]))


@pytest.mark.parametrize(
    ("seen", "unseen", "expected"),
    [
        (0.0, 0.0, 0.0),
        (1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0),
        (0.5, 0.5, 0.5),
        (0.7, 0.7, 0.7),
        (0.6, 0.3, 0.4),
    ],
)
def test_harmonic_mean(seen, unseen, expected):
    h = harmonic_mean(seen, unseen)
    assert not np.isnan(h)
    assert h == pytest.approx(expected)


def test_harmonic_mean_rejects_negative_accuracies():
    with pytest.raises(ValueError, match=">= 0"):
        harmonic_mean(-0.1, 0.5)


def test_chance_levels():
    levels = chance_levels(num_unseen=5, num_seen=55)
    assert levels["chance/zsl"] == pytest.approx(1 / 5)
    assert levels["chance/gzsl_unseen"] == pytest.approx(1 / 60)
    assert levels["chance/gzsl_seen"] == pytest.approx(1 / 60)
    assert levels["chance/gzsl_h"] == pytest.approx(1 / 60)
    with pytest.raises(ValueError, match="num_unseen >= 1"):
        chance_levels(num_unseen=0, num_seen=3)


# --------------------------------------------------------------------------------------------
# Scores and fusion


def test_softmax_matches_hand_values_and_is_stable():
    np.testing.assert_allclose(softmax(np.array([0.0, np.log(3.0)])), [0.25, 0.75])
    huge = softmax(np.array([1000.0, 1000.0 + np.log(3.0)]))
    np.testing.assert_allclose(huge, [0.25, 0.75])
    np.testing.assert_allclose(softmax(np.array([-1000.0, 0.0])), [0.0, 1.0])


def test_softmax_axis_and_dtype():
    logits = np.array([[0.0, 1.0], [np.log(3.0), 1.0]], dtype=np.float32)
    columns = softmax(logits, axis=0)
    assert columns.dtype == np.float32
    np.testing.assert_allclose(columns[:, 0], [0.25, 0.75], rtol=1e-6)
    np.testing.assert_allclose(columns[:, 1], [0.5, 0.5], rtol=1e-6)
    assert softmax(np.array([1, 2])).dtype == np.float64


# Probabilities chosen so that the sum and the product of the branches disagree on the top-1;
# the logits are log-probabilities shifted by a per-branch constant (softmax ignores it).
SPATIAL_PROBS = np.array([[0.9, 0.06, 0.04]])
TEMPORAL_PROBS = np.array([[0.02, 0.49, 0.49]])
SPATIAL_LOGITS = np.log(SPATIAL_PROBS) + 1.0
TEMPORAL_LOGITS = np.log(TEMPORAL_PROBS) - 2.0


def test_fusion_methods_are_those_of_the_config():
    assert typing.get_args(typing.get_type_hints(EvalConfig)["fusion"]) == metrics.FUSION_METHODS
    assert EvalConfig().fusion == "sum_softmax"


@pytest.mark.parametrize(
    ("method", "expected", "top1"),
    [
        ("sum_softmax", [[0.92, 0.55, 0.53]], 0),
        ("product_softmax", np.log([[0.018, 0.0294, 0.0196]]), 1),
        ("sum_logits", np.log([[0.018, 0.0294, 0.0196]]) - 1.0, 1),
        ("spatial", SPATIAL_PROBS, 0),
        ("temporal", TEMPORAL_PROBS, 1),
    ],
)
def test_fuse_scores_methods(method, expected, top1):
    fused = fuse_scores(SPATIAL_LOGITS, TEMPORAL_LOGITS, method)
    np.testing.assert_allclose(fused, expected, rtol=1e-9)
    assert int(np.argmax(fused)) == top1


@pytest.mark.parametrize(
    ("spatial", "temporal", "method", "expected"),
    [
        (SPATIAL_LOGITS, None, "sum_softmax", SPATIAL_PROBS),
        (None, TEMPORAL_LOGITS, "sum_softmax", TEMPORAL_PROBS),
        (None, TEMPORAL_LOGITS, "sum_logits", TEMPORAL_LOGITS),
        (SPATIAL_LOGITS, None, "product_softmax", np.log(SPATIAL_PROBS)),
        (None, TEMPORAL_LOGITS, "temporal", TEMPORAL_PROBS),
    ],
)
def test_fuse_scores_with_a_missing_branch_uses_the_other(spatial, temporal, method, expected):
    np.testing.assert_allclose(fuse_scores(spatial, temporal, method), expected, rtol=1e-9)


def test_fuse_scores_errors():
    with pytest.raises(ValueError, match="needs the spatial branch"):
        fuse_scores(None, TEMPORAL_LOGITS, "spatial")
    with pytest.raises(ValueError, match="needs the temporal branch"):
        fuse_scores(SPATIAL_LOGITS, None, "temporal")
    with pytest.raises(ValueError, match="both branches are None"):
        fuse_scores(None, None, "sum_softmax")
    with pytest.raises(ValueError, match="must be one of"):
        fuse_scores(SPATIAL_LOGITS, TEMPORAL_LOGITS, "max")
    with pytest.raises(ValueError, match="differ in shape"):
        fuse_scores(SPATIAL_LOGITS, np.zeros((1, 4)), "sum_softmax")


# --------------------------------------------------------------------------------------------
# GZSL calibration

# Columns 0 and 1 are seen, column 2 unseen. Margins (best seen − best unseen): 0.05, 0.30,
# 0.05, 0.20. Each sample's prediction with γ subtracted from the seen columns:
#   γ = 0     → [0, 1, 0, 0]: seen 2/2, unseen 0/2, H 0
#   γ = 0.1   → [2, 1, 2, 0]: seen 1/2, unseen 1/2, H 0.5
#   γ = 0.25  → [2, 1, 2, 2]: seen 1/2, unseen 2/2, H 2/3
#   γ = 0.4   → [2, 2, 2, 2]: seen 0/2, unseen 2/2, H 0
GZSL_SCORES = np.array(
    [
        [0.50, 0.10, 0.45],
        [0.20, 0.60, 0.30],
        [0.40, 0.10, 0.35],
        [0.30, 0.20, 0.10],
    ]
)
GZSL_LABELS = np.array([0, 1, 2, 2])
SEEN_COLUMNS = np.array([True, True, False])


def test_calibrated_stacking_subtracts_gamma_from_seen_columns_only():
    scores = np.array([[0.5, 0.4, 0.3]])
    calibrated = calibrated_stacking(scores, np.array([True, False, True]), 0.2)
    np.testing.assert_allclose(calibrated, [[0.3, 0.4, 0.1]])
    np.testing.assert_array_equal(scores, [[0.5, 0.4, 0.3]])


def test_calibrated_stacking_rejects_a_bad_mask():
    with pytest.raises(ValueError, match="bool mask of shape"):
        calibrated_stacking(GZSL_SCORES, np.array([1, 1, 0]), 0.1)
    with pytest.raises(ValueError, match="bool mask of shape"):
        calibrated_stacking(GZSL_SCORES, np.array([True, False]), 0.1)


@pytest.mark.parametrize(
    ("gamma", "expected"),
    [
        (0.0, (1.0, 0.0, 0.0)),
        (0.1, (0.5, 0.5, 0.5)),
        (0.25, (0.5, 1.0, 2 / 3)),
        (0.4, (0.0, 1.0, 0.0)),
    ],
)
def test_gzsl_accuracies_as_gamma_flips_predictions(gamma, expected):
    assert gzsl_accuracies(GZSL_SCORES, GZSL_LABELS, SEEN_COLUMNS, gamma) == pytest.approx(expected)


def test_calibrated_stacking_raises_unseen_accuracy_when_seen_scores_dominate():
    _, unseen_before, _ = gzsl_accuracies(GZSL_SCORES, GZSL_LABELS, SEEN_COLUMNS, 0.0)
    _, unseen_after, _ = gzsl_accuracies(GZSL_SCORES, GZSL_LABELS, SEEN_COLUMNS, 0.25)
    assert unseen_before == 0.0
    assert unseen_after == 1.0


def test_gzsl_accuracies_needs_both_groups():
    with pytest.raises(ValueError, match="no samples of unseen classes"):
        gzsl_accuracies(GZSL_SCORES[:2], GZSL_LABELS[:2], SEEN_COLUMNS, 0.0)
    with pytest.raises(ValueError, match="no samples of seen classes"):
        gzsl_accuracies(GZSL_SCORES[2:], GZSL_LABELS[2:], SEEN_COLUMNS, 0.0)


def test_gamma_grid_spans_the_margins_and_includes_zero():
    grid = gamma_grid(GZSL_SCORES, SEEN_COLUMNS, num=6)
    np.testing.assert_allclose(grid, [0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30])
    default = gamma_grid(GZSL_SCORES, SEEN_COLUMNS)
    assert len(default) == 42
    assert default[0] == 0.0
    assert default[-1] == pytest.approx(0.30)


def test_gamma_grid_with_margins_of_both_signs_is_sorted_and_holds_zero():
    scores = np.array([[0.2, 0.5], [0.4, 0.1]])  # margins -0.3 and 0.3; 0 is the 21st of 41
    grid = gamma_grid(scores, np.array([True, False]))
    assert np.all(np.diff(grid) > 0)
    assert 0.0 in grid
    assert grid[0] == pytest.approx(-0.3)
    assert grid[-1] == pytest.approx(0.3)


def test_gamma_grid_errors():
    with pytest.raises(ValueError, match="one seen and one unseen column"):
        gamma_grid(GZSL_SCORES, np.array([True, True, True]))
    with pytest.raises(ValueError, match="num=1"):
        gamma_grid(GZSL_SCORES, SEEN_COLUMNS, num=1)


def test_choose_gamma_maximises_h_on_a_given_grid():
    chosen = choose_gamma(GZSL_SCORES, GZSL_LABELS, SEEN_COLUMNS, grid=[0.0, 0.1, 0.25, 0.4])
    assert chosen == pytest.approx((0.25, 0.5, 1.0, 2 / 3))


def test_choose_gamma_breaks_ties_towards_the_smallest_magnitude():
    # 0.22 and 0.27 both give H = 2/3; so does every γ in (0.2, 0.3).
    for grid in ([0.27, 0.22, -0.4], [-0.4, 0.22, 0.27]):
        assert choose_gamma(GZSL_SCORES, GZSL_LABELS, SEEN_COLUMNS, grid)[0] == 0.22
    # -0.5 (everything seen) and 0.5 (everything unseen) both give H = 0: the negative one wins.
    for grid in ([0.5, -0.5], [-0.5, 0.5]):
        assert choose_gamma(GZSL_SCORES, GZSL_LABELS, SEEN_COLUMNS, grid)[0] == -0.5


def test_choose_gamma_default_grid_finds_the_best_interval():
    gamma, seen, unseen, h = choose_gamma(GZSL_SCORES, GZSL_LABELS, SEEN_COLUMNS)
    # The default grid steps by 0.25 / 40 from 0.05; H = 2/3 on (0.2, 0.3), and the grid point
    # at 0.2 sits on the boundary, where rounding decides, so the pick is 0.2 or 0.20625.
    assert 0.2 - 1e-9 <= gamma <= 0.20625 + 1e-9
    assert (seen, unseen, h) == pytest.approx((0.5, 1.0, 2 / 3))


def test_choose_gamma_rejects_an_empty_grid():
    with pytest.raises(ValueError, match="grid is empty"):
        choose_gamma(GZSL_SCORES, GZSL_LABELS, SEEN_COLUMNS, grid=[])


# --------------------------------------------------------------------------------------------
# evaluate_split

# Columns are dataset class ids (3, 7, 11, 5, 9); seen (3, 5), unseen (7, 9); class 11 belongs to
# neither (e.g. a test-unseen class while evaluating the validation split) and must be ignored.
ORDER = (3, 7, 11, 5, 9)
SEEN = (3, 5)
UNSEEN = (7, 9)
SPLIT_LABELS = np.array([7, 9, 3, 5])
# Last step. Sample 0 (class 7) scores the seen class 3 highest, so it is wrong in GZSL at γ = 0
# but right in ZSL, where only the unseen columns 7 and 9 compete. Sample 1's best score is the
# excluded class 11.
SPATIAL_LAST = np.array(
    [
        [0.09, 0.05, 0.00, 0.00, 0.01],
        [0.00, 0.02, 0.08, 0.00, 0.03],
        [0.05, 0.00, 0.00, 0.01, 0.02],
        [0.00, 0.01, 0.00, 0.04, 0.00],
    ]
)
SPATIAL_STEP1 = np.array(
    [
        [0.00, 0.01, 0.00, 0.00, 0.05],
        [0.00, 0.00, 0.00, 0.00, 0.03],
        [0.00, 0.00, 0.00, 0.00, 0.00],
        [0.00, 0.00, 0.00, 0.00, 0.00],
    ]
)
TEMPORAL_LAST = np.array(
    [
        [0.00, 0.01, 0.00, 0.00, 0.03],
        [0.00, 0.01, 0.00, 0.00, 0.02],
        [0.00, 0.03, 0.00, 0.00, 0.00],
        [0.00, 0.00, 0.00, 0.03, 0.00],
    ]
)
SPATIAL = np.stack([SPATIAL_STEP1, SPATIAL_LAST])  # (S=2, N=4, C=5)
TEMPORAL = np.stack([TEMPORAL_LAST, TEMPORAL_LAST])
ZERO_GAMMA = {"fused": 0.0, "spatial": 0.0, "temporal": 0.0}


def _evaluate(spatial=SPATIAL, temporal=TEMPORAL, labels=SPLIT_LABELS, **kwargs):
    arguments = {
        "seen_classes": SEEN,
        "unseen_classes": UNSEEN,
        "all_classes_order": ORDER,
        "fusion": "sum_softmax",
        "gamma": None,
    } | kwargs
    return evaluate_split("val", spatial, temporal, labels, **arguments)


def test_evaluate_split_zsl_restricts_columns_to_unseen_classes():
    values, _ = _evaluate(gamma=ZERO_GAMMA)
    # spatial last step, among (7, 9): sample 0 → 7 (right), sample 1 → 9 (right)
    assert values["val/zsl_top1_spatial"] == 1.0
    assert values["val/zsl_top1_spatial_step2"] == 1.0
    # spatial step 1: sample 0 → 9 (wrong), sample 1 → 9 (right)
    assert values["val/zsl_top1_spatial_step1"] == 0.5
    # temporal: sample 0 → 9 (wrong), sample 1 → 9 (right)
    assert values["val/zsl_top1_temporal"] == 0.5
    assert values["val/zsl_top1_temporal_step1"] == 0.5
    # fused sample 0: softmax(.05, .01) + softmax(.01, .03) favours 7 by tanh(.02) - tanh(.01) > 0
    assert values["val/zsl_top1"] == 1.0
    assert values["val/zsl_mean_class"] == 1.0


def test_evaluate_split_metric_names():
    values, gamma_used = _evaluate()
    expected = {
        f"val/{name}"
        for name in (
            "zsl_top1",
            "zsl_mean_class",
            "zsl_top1_spatial",
            "zsl_top1_temporal",
            "zsl_top1_spatial_step1",
            "zsl_top1_spatial_step2",
            "zsl_top1_temporal_step1",
            "zsl_top1_temporal_step2",
            "gzsl_seen",
            "gzsl_unseen",
            "gzsl_h",
            "gzsl_gamma",
            "gzsl_h_spatial",
            "gzsl_h_temporal",
        )
    }
    assert set(values) == expected
    assert set(gamma_used) == {"fused", "spatial", "temporal"}
    assert all(isinstance(value, float) for value in values.values())


def test_evaluate_split_gzsl_at_zero_gamma_by_hand():
    values, gamma_used = _evaluate(gamma=ZERO_GAMMA)
    assert gamma_used == ZERO_GAMMA
    # Columns (3, 7, 5, 9). Spatial predicts [3, 9, 3, 5]: seen 2/2, unseen 1/2.
    assert values["val/gzsl_h_spatial"] == pytest.approx(2 / 3)
    # Temporal predicts [9, 9, 7, 5]: seen 1/2, unseen 1/2.
    assert values["val/gzsl_h_temporal"] == pytest.approx(0.5)
    # Fused (sum of softmax) predicts [3, 9, 3, 5], like the spatial branch.
    assert (values["val/gzsl_seen"], values["val/gzsl_unseen"]) == (1.0, 0.5)
    assert values["val/gzsl_h"] == pytest.approx(2 / 3)
    assert values["val/gzsl_gamma"] == 0.0


def test_evaluate_split_applies_a_given_gamma_unchanged():
    # γ = 1 exceeds every margin of a softmax: every sample goes to an unseen class, and the
    # unseen samples are then right exactly as in ZSL.
    values, gamma_used = _evaluate(gamma={"fused": 1.0, "spatial": 1.0, "temporal": 1.0})
    assert gamma_used == {"fused": 1.0, "spatial": 1.0, "temporal": 1.0}
    assert values["val/gzsl_seen"] == 0.0
    assert values["val/gzsl_unseen"] == 1.0
    assert values["val/gzsl_h"] == 0.0
    assert values["val/gzsl_gamma"] == 1.0
    assert values["val/gzsl_h_spatial"] == 0.0


def test_evaluate_split_chooses_gamma_per_score_kind_and_test_reuses_it():
    values, gamma_used = _evaluate()
    # Spatial: no γ puts both samples 0 and 2 right (margins 0.04 vs 0.03 in logits), so H = 2/3
    # on the interval around 0, and 0 itself is the smallest |γ| there. Temporal likewise: H = 0.5.
    assert gamma_used["spatial"] == 0.0
    assert values["val/gzsl_h_spatial"] == pytest.approx(2 / 3)
    assert gamma_used["temporal"] == 0.0
    assert values["val/gzsl_h_temporal"] == pytest.approx(0.5)
    # The fused γ is the one choose_gamma picks on the fused seen ∪ unseen scores.
    columns = [0, 1, 3, 4]
    fused = fuse_scores(SPATIAL_LAST[:, columns], TEMPORAL_LAST[:, columns], "sum_softmax")
    labels = np.array([1, 3, 0, 2])
    seen_columns = np.array([True, False, True, False])
    expected = choose_gamma(fused, labels, seen_columns)
    assert (
        gamma_used["fused"],
        values["val/gzsl_seen"],
        values["val/gzsl_unseen"],
        values["val/gzsl_h"],
    ) == (pytest.approx(expected))
    # A test split given these γ values reproduces the same GZSL numbers on the same scores.
    again, reused = evaluate_split(
        "test", SPATIAL, TEMPORAL, SPLIT_LABELS, SEEN, UNSEEN, ORDER, "sum_softmax", gamma_used
    )
    assert reused == gamma_used
    for name in (
        "gzsl_seen",
        "gzsl_unseen",
        "gzsl_h",
        "gzsl_gamma",
        "gzsl_h_spatial",
        "gzsl_h_temporal",
    ):
        assert again[f"test/{name}"] == values[f"val/{name}"]


def test_evaluate_split_uses_a_given_grid():
    values, gamma_used = _evaluate(grid=(0.5,))
    assert gamma_used == {"fused": 0.5, "spatial": 0.5, "temporal": 0.5}
    assert values["val/gzsl_seen"] == 0.0


def test_evaluate_split_with_one_branch():
    values, gamma_used = _evaluate(temporal=None, gamma={"fused": 0.0, "spatial": 0.0})
    assert set(gamma_used) == {"fused", "spatial"}
    assert not any("temporal" in name for name in values)
    assert values["val/zsl_top1"] == values["val/zsl_top1_spatial"] == 1.0
    assert values["val/gzsl_h"] == values["val/gzsl_h_spatial"] == pytest.approx(2 / 3)


def test_evaluate_split_single_branch_fusion():
    values, _ = _evaluate(fusion="temporal", gamma=ZERO_GAMMA)
    assert values["val/zsl_top1"] == values["val/zsl_top1_temporal"] == 0.5
    assert values["val/gzsl_h"] == values["val/gzsl_h_temporal"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temporal": None, "fusion": "temporal"}, "needs the temporal branch"),
        ({"spatial": None, "temporal": None}, "both branches are None"),
        ({"gamma": {"fused": 0.0, "spatial": 0.0}}, "no entry 'temporal'"),
        ({"labels": np.array([7, 9, 3, 11])}, r"class ids \[11\] that are neither seen nor unseen"),
        ({"labels": np.array([3, 5, 3, 5])}, "no samples of the unseen classes"),
        ({"labels": np.array([7, 9, 7, 9])}, "no samples of the seen classes"),
        ({"all_classes_order": (3, 7, 11, 5)}, "lists 4 class ids but the logits have 5 columns"),
        ({"all_classes_order": (3, 7, 11, 5, 5)}, "repeats a class id"),
        ({"unseen_classes": (7, 9, 5)}, r"classes \[5\] are both seen and unseen"),
        ({"unseen_classes": (7, 9, 13)}, r"classes \[13\] have no score column"),
        ({"labels": SPLIT_LABELS[:3]}, "have 4 samples but there are 3 labels"),
        ({"fusion": "max"}, "must be one of"),
    ],
)
def test_evaluate_split_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _evaluate(**kwargs)


# --------------------------------------------------------------------------------------------
# paper_parity_metrics

# Classes 0, 1 seen; 2, 3 unseen. Probabilities are given directly (logits = log p), so the
# calibrated margins are exact: spatial sample 1 stays right while γ < 2.75e-4, spatial sample 2
# becomes right once γ > 2.45e-4; every other hit or miss holds for every γ in the grid.
PARITY_SPATIAL = np.array(
    [
        [0.7, 0.1, 0.1, 0.1],
        [0.1, 0.400275, 0.4, 0.099725],
        [0.4, 0.1, 0.399755, 0.100245],
        [0.1, 0.1, 0.7, 0.1],
    ]
)
PARITY_TEMPORAL = np.array(
    [
        [0.1, 0.7, 0.1, 0.1],
        [0.7, 0.1, 0.1, 0.1],
        [0.1, 0.1, 0.1, 0.7],
        [0.1, 0.1, 0.1, 0.7],
    ]
)
PARITY_LABELS = np.array([0, 1, 2, 3])


def _parity_logits(probabilities: np.ndarray) -> np.ndarray:
    """(S=2, N, C): a misleading first step, then log-probabilities at the last step."""
    first_step = np.log(np.full_like(probabilities, 0.1))
    first_step[:, 0] = 0.0
    return np.stack([first_step, np.log(probabilities)])


def test_paper_parity_grid_matches_the_reference():
    assert pytest.approx([2.0e-4 + 0.1e-4 * i for i in range(11)]) == PAPER_PARITY_GAMMAS


def test_paper_parity_metrics_by_hand():
    values = paper_parity_metrics(
        _parity_logits(PARITY_SPATIAL),
        _parity_logits(PARITY_TEMPORAL),
        PARITY_LABELS,
        seen_classes=(0, 1),
        unseen_classes=(2, 3),
        all_classes_order=(0, 1, 2, 3),
    )
    # ZSL among (2, 3): spatial gets sample 2 only, temporal sample 3 only; the oracle gets both.
    assert values["paper_parity/zsl_top1_either_branch"] == 1.0
    # GZSL: spatial γ in {2.5, 2.6, 2.7}e-4 puts samples 0-2 right, temporal always gets sample 3;
    # the first such pair in the reference's loop order wins.
    assert values["paper_parity/gzsl_seen"] == 1.0
    assert values["paper_parity/gzsl_unseen"] == 1.0
    assert values["paper_parity/gzsl_h"] == 1.0
    assert values["paper_parity/gzsl_gamma_spatial"] == pytest.approx(2.5e-4)
    assert values["paper_parity/gzsl_gamma_temporal"] == pytest.approx(2.0e-4)


def test_paper_parity_metrics_exceed_the_honest_ones_here():
    arguments = ((0, 1), (2, 3), (0, 1, 2, 3))
    spatial, temporal = _parity_logits(PARITY_SPATIAL), _parity_logits(PARITY_TEMPORAL)
    honest, _ = evaluate_split(
        "test", spatial, temporal, PARITY_LABELS, *arguments, "sum_softmax", None
    )
    parity = paper_parity_metrics(spatial, temporal, PARITY_LABELS, *arguments)
    assert honest["test/zsl_top1_spatial"] == honest["test/zsl_top1_temporal"] == 0.5
    assert parity["paper_parity/zsl_top1_either_branch"] > honest["test/zsl_top1"]
    assert parity["paper_parity/gzsl_h"] > honest["test/gzsl_h"]


def test_paper_parity_metrics_with_one_branch():
    values = paper_parity_metrics(
        _parity_logits(PARITY_SPATIAL), None, PARITY_LABELS, (0, 1), (2, 3), (0, 1, 2, 3)
    )
    assert values["paper_parity/zsl_top1_either_branch"] == 0.5
    # Best spatial γ = 2.5e-4: samples 0, 1, 2 right, sample 3 wrong → seen 1, unseen 0.5.
    assert values["paper_parity/gzsl_h"] == pytest.approx(2 / 3)
    assert values["paper_parity/gzsl_gamma_spatial"] == pytest.approx(2.5e-4)
    assert "paper_parity/gzsl_gamma_temporal" not in values


def test_gzsl_accuracies_agree_with_the_top1_of_calibrated_stacking():
    # Small integer scores force many ties, inside and across the seen and unseen groups.
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(300, 6)).astype(np.float64)
    labels = rng.integers(0, 6, size=300)
    seen_columns = np.array([False, True, True, False, True, False])
    for gamma in (-1.0, 0.0, 0.5, 1.0, 2.0):
        correct = np.argmax(calibrated_stacking(scores, seen_columns, gamma), axis=1) == labels
        seen_samples = seen_columns[labels]
        expected = (correct[seen_samples].mean(), correct[~seen_samples].mean())
        assert gzsl_accuracies(scores, labels, seen_columns, gamma)[:2] == pytest.approx(expected)


def test_evaluate_split_treats_an_empty_grid_as_the_default():
    # eval.gamma_grid defaults to (), meaning "the default grid".
    assert _evaluate(grid=()) == _evaluate(grid=None)


def test_paper_parity_metrics_need_seen_and_unseen_samples():
    with pytest.raises(ValueError, match="paper_parity: no samples of the seen classes"):
        paper_parity_metrics(
            _parity_logits(PARITY_SPATIAL)[:, 2:],
            _parity_logits(PARITY_TEMPORAL)[:, 2:],
            PARITY_LABELS[2:],
            (0, 1),
            (2, 3),
            (0, 1, 2, 3),
        )
