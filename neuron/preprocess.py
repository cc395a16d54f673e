"""Per-sequence preprocessing: pure functions on (C, T, V, M) numpy arrays (C = 3 coordinates).

The steps follow the reference skeleton pipeline used by Shift-GCN / CTR-GCN and the Neuron
code that builds on them:

1. `to_channels_first`: the stored (T, M, V, 3) joints become (3, T, V, M), padded with zero
   bodies up to `max_bodies`.
2. `centre_on_spine`: CTR-GCN `seq_transformation.seq_translation` — the origin is the spine
   joint (`neuron.joints.NTU_SPINE_JOINT`, spine_mid) of the first body in the first frame where
   that body is present; it is subtracted from every present (non-zero) body-frame, absent
   body-frames stay exactly zero. Centring an already centred sequence changes nothing.
3. `crop_resize`: CTR-GCN `tools.valid_crop_resize` — crop a ratio of the valid frames (random
   in training, centred otherwise) and resize it to `window` frames by linear interpolation
   (`align_corners=False`, identical to the reference's bilinear resize of a (C*V*M, T) image).
4. `random_rotation` (training only): one random rotation about the x, y and z axes, applied to
   every frame (CTR-GCN `tools.random_rot`, with the angle bound in degrees).

Deliberate differences from the reference, each documented at the function: the valid frames
are the span from the first to the last non-zero frame (the reference counts non-zero frames
and assumes they come first), and the random crop's lower bound on length is `window` frames
(the reference hard-codes 64, its window).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from neuron.dataset import DatasetError
from neuron.joints import NTU_SPINE_JOINT


def _check_sequence(x: np.ndarray, name: str = "x") -> None:
    if x.ndim != 4 or x.shape[0] != 3:
        raise DatasetError(
            f"{name}: shape {x.shape}, expected (3, T, V, M) with 3 coordinates first"
        )
    if x.shape[1] < 1:
        raise DatasetError(f"{name}: shape {x.shape} has no frames (T = 0)")


def to_channels_first(joints: np.ndarray, max_bodies: int) -> np.ndarray:
    """Stored joints (T, M, V, 3) → float32 (3, T, V, max_bodies).

    Bodies beyond `max_bodies` are dropped (importers store bodies in priority order, so the
    first ones are kept); missing bodies are zeros.
    """
    joints = np.asarray(joints, dtype=np.float32)
    if joints.ndim != 4 or joints.shape[-1] != 3:
        raise DatasetError(f"joints: shape {joints.shape}, expected (T, M, V, 3)")
    if max_bodies < 1:
        raise DatasetError(f"max_bodies={max_bodies}: must be >= 1")
    frames, bodies, num_joints, _ = joints.shape
    kept = min(bodies, max_bodies)
    x = np.zeros((3, frames, num_joints, max_bodies), dtype=np.float32)
    x[..., :kept] = joints[:, :kept].transpose(3, 0, 2, 1)  # (T, M, V, 3) -> (3, T, V, M)
    return x


def present_body_frames(x: np.ndarray) -> np.ndarray:
    """(T, M) bool: whether body m has any non-zero coordinate in frame t."""
    _check_sequence(x)
    channels, frames, num_joints, bodies = x.shape
    # Reducing a contiguous copy is several times faster than any(axis=(0, 2)) on strided data.
    per_body = x.transpose(1, 3, 0, 2).reshape(frames, bodies, channels * num_joints)  # (T, M, C*V)
    return (per_body != 0).any(axis=2)


def valid_frame_range(x: np.ndarray) -> tuple[int, int]:
    """[begin, end) from the first to the last frame with any non-zero coordinate.

    An all-zero sequence returns (0, T), so it still crops and resizes (to zeros).
    """
    present = present_body_frames(x).any(axis=1)
    if not present.any():
        return 0, int(x.shape[1])
    indices = np.flatnonzero(present)
    return int(indices[0]), int(indices[-1]) + 1


def valid_frame_count(x: np.ndarray) -> int:
    """Number of frames from the first to the last non-zero frame (inclusive).

    The reference counts the non-zero frames; both agree when empty frames only trail, which
    is how preprocessed NTU/PKU arrays are padded. Empty frames inside the span (a Kinect that
    lost the body for a moment) count here, so the crop never slides past the motion.
    """
    begin, end = valid_frame_range(x)
    return end - begin


def centre_on_spine(x: np.ndarray) -> np.ndarray:
    """Translate so the first body's spine joint in its first present frame is the origin.

    Only present (non-zero) body-frames move; absent bodies and frames stay zero, as in the
    reference `seq_translation`. Returns a new float32 array; an all-zero sequence is returned
    unchanged.
    """
    _check_sequence(x)
    present = present_body_frames(x)  # (T, M)
    first_body_frames = np.flatnonzero(present[:, 0])
    if first_body_frames.size == 0:
        return np.array(x, dtype=np.float32, copy=True)
    origin = x[:, first_body_frames[0], NTU_SPINE_JOINT, 0]  # (3,)
    centred = x.astype(np.float32, copy=True)
    centred -= origin[:, None, None, None] * present[None, :, None, :]
    return centred


def crop_resize(
    x: np.ndarray,
    window: int,
    crop_ratio: tuple[float, float] | float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Crop the valid frames and resize them to `window` frames (reference `valid_crop_resize`).

    With `rng` and a `(low, high)` ratio the kept ratio p is uniform in [low, high], the
    cropped length is floor(p * valid) bounded below by min(window, valid), and its start is
    uniform. Without `rng` (or with a single float ratio) the crop is deterministic: a centre
    crop keeping the ratio (the upper bound of a tuple), so ratio 1.0 keeps every valid frame.
    A single valid frame is repeated `window` times.
    """
    _check_sequence(x)
    if window < 1:
        raise DatasetError(f"window={window}: must be >= 1 frame")
    low, high = (crop_ratio, crop_ratio) if isinstance(crop_ratio, (int, float)) else crop_ratio
    if not 0.0 < low <= high <= 1.0:
        raise DatasetError(f"crop_ratio={crop_ratio!r}: must satisfy 0 < low <= high <= 1")
    begin, end = valid_frame_range(x)
    valid = end - begin
    if rng is None or low == high:
        bias = int((1.0 - high) * valid / 2)
        start, length = begin + bias, max(valid - 2 * bias, 1)
    else:
        ratio = rng.uniform(low, high)
        length = min(max(int(math.floor(valid * ratio)), window), valid)
        start = begin + int(rng.integers(0, valid - length + 1))
    cropped = x[:, start : start + length]  # (C, L, V, M)
    channels, _, num_joints, bodies = x.shape
    series = torch.from_numpy(
        np.ascontiguousarray(cropped.transpose(0, 2, 3, 1), dtype=np.float32)
    )  # (C, V, M, L)
    series = series.reshape(1, channels * num_joints * bodies, length)  # (1, C*V*M, L)
    resized = F.interpolate(
        series, size=window, mode="linear", align_corners=False
    )  # (1, C*V*M, window)
    resized = resized.reshape(channels, num_joints, bodies, window)  # (C, V, M, window)
    return resized.permute(0, 3, 1, 2).contiguous().numpy()  # (C, window, V, M)


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """3x3 rotation Rz @ Ry @ Rx for angles (x, y, z) in radians (reference `_rot`)."""
    cos_x, cos_y, cos_z = np.cos(angles)
    sin_x, sin_y, sin_z = np.sin(angles)
    rotate_x = np.array([[1, 0, 0], [0, cos_x, sin_x], [0, -sin_x, cos_x]])
    rotate_y = np.array([[cos_y, 0, -sin_y], [0, 1, 0], [sin_y, 0, cos_y]])
    rotate_z = np.array([[cos_z, sin_z, 0], [-sin_z, cos_z, 0], [0, 0, 1]])
    return rotate_z @ rotate_y @ rotate_x


def random_rotation(x: np.ndarray, max_degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate every frame by one rotation with angles uniform in [-max_degrees, max_degrees] per axis.

    A linear map, so absent (zero) joints stay zero and bone lengths are preserved.
    """
    _check_sequence(x)
    if max_degrees < 0:
        raise DatasetError(f"max_degrees={max_degrees}: must be >= 0")
    angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=3))
    rotation = rotation_matrix(angles).astype(np.float32)
    return np.einsum("ij,jtvm->itvm", rotation, x.astype(np.float32, copy=False))  # (3, T, V, M)


def prepare_sequence(
    joints: np.ndarray,
    window: int,
    max_bodies: int,
    train: bool,
    crop_min_ratio: float = 0.5,
    rotation_degrees: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Stored joints (T, M, V, 3) → model input float32 (3, window, V, max_bodies).

    Training: centre, random crop of a ratio in [crop_min_ratio, 1], resize, then a random
    rotation when `rotation_degrees` > 0; `rng` is required. Evaluation: centre and resize all
    valid frames (no crop, no rotation; `rng` is ignored). The same `rng` state gives the same
    output.
    """
    x = centre_on_spine(to_channels_first(joints, max_bodies))
    if not train:
        return crop_resize(x, window, 1.0, None)
    if rng is None:
        raise DatasetError(
            "prepare_sequence(train=True) needs rng, a numpy Generator, for the random crop"
        )
    x = crop_resize(x, window, (crop_min_ratio, 1.0), rng)
    if rotation_degrees > 0:
        x = random_rotation(x, rotation_degrees, rng)
    return x.astype(np.float32, copy=False)
