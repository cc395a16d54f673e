"""Preprocessing: shapes, the reference crop/resize, centring, rotation and determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuron.dataset import DatasetError
from neuron.joints import NTU_BONES, NTU_SPINE_JOINT
from neuron.preprocess import (
    centre_on_spine,
    crop_resize,
    prepare_sequence,
    random_rotation,
    to_channels_first,
    valid_frame_count,
    valid_frame_range,
)


def _walk(frames: int, bodies: int = 1, seed: int = 0) -> np.ndarray:
    """A smooth random (T, M, 25, 3) sequence away from the origin, no exact zeros."""
    rng = np.random.default_rng(seed)
    start = rng.normal(size=(1, bodies, 25, 3)) + 2.0
    steps = rng.normal(scale=0.01, size=(frames, bodies, 25, 3))
    return (start + np.cumsum(steps, axis=0)).astype(np.float32)


def _reference_valid_crop_resize(
    x: np.ndarray, valid: int, window: int, ratio: float
) -> np.ndarray:
    """CTR-GCN `tools.valid_crop_resize` with a single ratio (centre crop), bilinear on (C*V*M, T)."""
    channels, _, joints, bodies = x.shape
    bias = int((1 - ratio) * valid / 2)
    data = torch.tensor(x[:, bias : valid - bias], dtype=torch.float)
    length = data.shape[1]
    data = (
        data.permute(0, 2, 3, 1).contiguous().view(channels * joints * bodies, length)
    )  # (C*V*M, L)
    data = F.interpolate(
        data[None, None],
        size=(channels * joints * bodies, window),
        mode="bilinear",
        align_corners=False,
    )
    return (
        data.squeeze().view(channels, joints, bodies, window).permute(0, 3, 1, 2).numpy()
    )  # (C, window, V, M)


def test_to_channels_first_pads_and_truncates_bodies() -> None:
    joints = _walk(6, bodies=1)
    x = to_channels_first(joints, max_bodies=2)
    assert x.shape == (3, 6, 25, 2)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], joints[:, 0].transpose(2, 0, 1))
    assert not x[..., 1].any()
    three = _walk(4, bodies=3)
    np.testing.assert_array_equal(
        to_channels_first(three, 2)[..., 1], three[:, 1].transpose(2, 0, 1)
    )
    assert to_channels_first(three, 2).shape == (3, 4, 25, 2)


def test_valid_frames_span_first_to_last_nonzero_frame() -> None:
    x = to_channels_first(_walk(10), 2)
    x[:, :2] = 0
    x[:, 7:] = 0
    x[:, 4] = 0  # a lost frame inside the motion still counts
    assert valid_frame_range(x) == (2, 7)
    assert valid_frame_count(x) == 5
    assert valid_frame_range(np.zeros((3, 8, 25, 2), np.float32)) == (0, 8)


def test_centre_on_spine_uses_the_first_present_frame_and_keeps_absent_zeros() -> None:
    joints = _walk(8, bodies=2)
    joints[:2, 0] = 0  # body 0 appears at frame 2
    joints[5:, 1] = 0  # body 1 leaves at frame 5
    x = to_channels_first(joints, 2)
    centred = centre_on_spine(x)
    origin = joints[2, 0, NTU_SPINE_JOINT]
    np.testing.assert_allclose(centred[:, 2, NTU_SPINE_JOINT, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(
        centred[:, 3:5, :, 1], x[:, 3:5, :, 1] - origin[:, None, None], atol=1e-6
    )
    assert not centred[:, :2, :, 0].any()
    assert not centred[:, 5:, :, 1].any()
    np.testing.assert_array_equal(centre_on_spine(centred), centred)


def test_crop_resize_without_rng_matches_the_reference_centre_crop() -> None:
    x = to_channels_first(_walk(37, bodies=2), 2)
    x[:, 30:] = 0  # trailing padding, the reference's valid-frame convention
    for ratio in (1.0, 0.9):
        ours = crop_resize(x, 64, ratio, None)
        assert ours.shape == (3, 64, 25, 2)
        np.testing.assert_allclose(ours, _reference_valid_crop_resize(x, 30, 64, ratio), atol=1e-6)


def test_full_crop_to_the_same_length_is_the_identity() -> None:
    x = to_channels_first(_walk(16), 1)
    np.testing.assert_allclose(crop_resize(x, 16, 1.0), x, atol=1e-6)
    np.testing.assert_allclose(crop_resize(x, 16, (0.5, 1.0), None), x, atol=1e-6)


def test_single_frame_sequence_is_repeated() -> None:
    x = to_channels_first(_walk(1, bodies=1), 2)
    resized = crop_resize(x, 64, (0.5, 1.0), np.random.default_rng(0))
    assert resized.shape == (3, 64, 25, 2)
    np.testing.assert_allclose(resized, np.repeat(x, 64, axis=1), atol=1e-6)


def test_random_crop_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    x = to_channels_first(_walk(120), 2)
    first = crop_resize(x, 32, (0.5, 1.0), np.random.default_rng(7))
    again = crop_resize(x, 32, (0.5, 1.0), np.random.default_rng(7))
    other = crop_resize(x, 32, (0.5, 1.0), np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_random_crop_stays_inside_the_valid_frames() -> None:
    x = np.zeros((3, 50, 25, 1), np.float32)
    x[:, 10:40] = np.arange(10, 40, dtype=np.float32)[None, :, None, None]  # value = frame index
    for seed in range(20):
        resized = crop_resize(x, 8, (0.5, 1.0), np.random.default_rng(seed))
        assert resized.min() >= 10 and resized.max() <= 39
        # The crop keeps at least min(window, valid) = 8 of the 30 valid frames.
        assert resized.max() - resized.min() >= 8 * (7 / 8) - 1e-4


def test_rotation_preserves_bone_lengths_and_absent_joints() -> None:
    x = to_channels_first(_walk(9, bodies=1), 2)
    rotated = random_rotation(x, 30.0, np.random.default_rng(3))
    assert rotated.shape == x.shape
    assert not np.allclose(rotated, x)
    for child, parent in NTU_BONES:
        before = np.linalg.norm(x[:, :, child] - x[:, :, parent], axis=0)
        after = np.linalg.norm(rotated[:, :, child] - rotated[:, :, parent], axis=0)
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    assert not rotated[..., 1].any()
    np.testing.assert_allclose(random_rotation(x, 0.0, np.random.default_rng(3)), x, atol=1e-6)


def test_rotation_angle_is_bounded() -> None:
    x = np.zeros((3, 1, 25, 1), np.float32)
    x[0, 0, 0, 0] = 1.0  # the unit x vector
    for seed in range(20):
        rotated = random_rotation(x, 10.0, np.random.default_rng(seed))[:, 0, 0, 0]
        angle = math.degrees(math.acos(float(np.clip(rotated[0], -1, 1))))
        assert angle <= 10.0 * math.sqrt(3) + 1e-3


def test_prepare_sequence_training_and_evaluation() -> None:
    joints = _walk(45, bodies=1)
    train = prepare_sequence(joints, 64, 2, True, 0.5, 15.0, np.random.default_rng(0))
    again = prepare_sequence(joints, 64, 2, True, 0.5, 15.0, np.random.default_rng(0))
    assert train.shape == (3, 64, 25, 2) and train.dtype == np.float32
    np.testing.assert_array_equal(train, again)
    evaluation = prepare_sequence(joints, 64, 2, False, 0.5, 15.0, np.random.default_rng(0))
    np.testing.assert_array_equal(
        evaluation, prepare_sequence(joints, 64, 2, False, 0.5, 15.0, None)
    )
    np.testing.assert_allclose(evaluation[:, 0, NTU_SPINE_JOINT, 0], 0.0, atol=1e-6)
    assert not evaluation[..., 1].any()
    assert not np.allclose(train, evaluation)


def test_prepare_sequence_handles_a_single_frame() -> None:
    prepared = prepare_sequence(_walk(1), 64, 2, True, 0.5, 0.0, np.random.default_rng(0))
    assert prepared.shape == (3, 64, 25, 2)
    np.testing.assert_allclose(prepared[:, 0], prepared[:, 63])


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(DatasetError, match=r"joints: shape \(5, 25, 3\), expected \(T, M, V, 3\)"):
        to_channels_first(np.zeros((5, 25, 3)), 2)
    with pytest.raises(DatasetError, match=r"x: shape \(25, 5, 3, 1\), expected \(3, T, V, M\)"):
        crop_resize(np.zeros((25, 5, 3, 1)), 8, 1.0)
    with pytest.raises(DatasetError, match=r"crop_ratio=\(0\.0, 1\.0\)"):
        crop_resize(np.ones((3, 5, 25, 1)), 8, (0.0, 1.0))
    with pytest.raises(DatasetError, match="needs rng"):
        prepare_sequence(_walk(5), 8, 2, True, 0.5, 0.0, None)
