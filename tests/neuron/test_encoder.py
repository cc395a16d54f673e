"""Shift-GCN encoder: shapes, the spatial and temporal shifts, optimiser groups, FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from neuron import encoder as encoder_module
from neuron.config import EncoderConfig
from neuron.encoder import (
    OFFSET_GRADIENT_STEP,
    ShiftGCN,
    ShiftGraphConv,
    TemporalShift,
    _select_columns,
    encoder_flops,
    pool_features,
    spatial_shift_index,
    temporal_shift,
)
from tests.neuron import reference_encoder

TINY = EncoderConfig(channels=(8, 8, 16), stride_units=(1,))
JOINTS = 25
CLASSES = 5


def tiny_encoder(seed: int = 0) -> ShiftGCN:
    torch.manual_seed(seed)
    return ShiftGCN(TINY, num_classes=CLASSES, num_joints=JOINTS)


def skeletons(batch: int = 3, window: int = 16, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, window, JOINTS, 2, generator=generator)


@pytest.mark.parametrize("window", [16, 15])
def test_feature_map_and_logit_shapes(window: int) -> None:
    encoder = tiny_encoder()
    x = skeletons(window=window)
    feature_map = encoder.features(x)
    assert feature_map.shape == (3, 16, TINY.feature_frames(window), JOINTS)
    assert encoder(x).shape == (3, CLASSES)


def test_features_average_the_bodies() -> None:
    encoder = tiny_encoder().eval()
    x = skeletons()
    # With the input BN in eval mode (identity statistics) each body runs independently.
    one_body = ShiftGCN(TINY, num_classes=CLASSES, num_joints=JOINTS, max_bodies=1).eval()
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("input_norm")}
    one_body.load_state_dict(state, strict=False)
    expected = (one_body.features(x[..., :1]) + one_body.features(x[..., 1:])) / 2
    torch.testing.assert_close(encoder.features(x), expected)


def test_rejects_wrong_input_shape_and_even_kernel() -> None:
    encoder = tiny_encoder()
    with pytest.raises(ValueError, match="V=25"):
        encoder.features(torch.zeros(2, 3, 16, 20, 2))
    with pytest.raises(ValueError, match="model.encoder.temporal_kernel=4"):
        ShiftGCN(EncoderConfig(channels=(8,), stride_units=(), temporal_kernel=4), num_classes=2)


def test_pool_features_means_over_time_and_joints() -> None:
    feature_map = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    joint_features, frame_features = pool_features(feature_map)
    assert joint_features.shape == (2, 3, 5) and frame_features.shape == (2, 3, 4)
    torch.testing.assert_close(joint_features[1, 2, 3], feature_map[1, 2, :, 3].mean())
    torch.testing.assert_close(frame_features[0, 1, 2], feature_map[0, 1, 2, :].mean())


# --------------------------------------------------------------------------------------------
# Spatial shift


def test_shift_in_reads_joint_i_plus_j() -> None:
    joints, channels = 5, 3
    x = torch.randn(joints, channels)
    shifted = x.reshape(-1)[spatial_shift_index(joints, channels, +1)].view(joints, channels)
    for joint in range(joints):
        for channel in range(channels):
            assert shifted[joint, channel] == x[(joint + channel) % joints, channel]
    back = shifted.reshape(-1)[spatial_shift_index(joints, channels, -1)].view(joints, channels)
    torch.testing.assert_close(back, x)


def test_shift_in_then_out_with_identity_mask_and_linear_is_identity() -> None:
    layer = ShiftGraphConv(6, 6, JOINTS)
    with torch.no_grad():
        layer.linear_weight.copy_(torch.eye(6))
    # The feature mask starts at 0, so tanh(mask) + 1 is exactly 1.
    x = torch.randn(2, 6, 4, JOINTS)
    expected = x.permute(0, 2, 3, 1).reshape(2 * 4, JOINTS * 6)  # (N*T, V*C)
    torch.testing.assert_close(layer.shifted_linear(x), expected)
    assert sorted(layer.shift_in_index.tolist()) == list(range(JOINTS * 6))


# --------------------------------------------------------------------------------------------
# Temporal shift


def zero_padded_roll(x: torch.Tensor, offset: int) -> torch.Tensor:
    """x (N, T, V) read at t + offset, zero outside the sequence."""
    rolled = torch.roll(x, shifts=-offset, dims=1)
    frames = x.shape[1]
    if offset > 0:
        rolled[:, frames - offset :] = 0
    elif offset < 0:
        rolled[:, :-offset] = 0
    return rolled


def test_integer_offsets_equal_zero_padded_roll() -> None:
    x = torch.randn(2, 4, 7, 3)
    offsets = torch.tensor([0.0, 1.0, -2.0, 3.0])
    shifted = temporal_shift(x, offsets)
    for channel, offset in enumerate(offsets.long().tolist()):
        torch.testing.assert_close(shifted[:, channel], zero_padded_roll(x[:, channel], offset))


def test_fractional_offsets_interpolate_linearly() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).view(1, 1, 5, 1).repeat(1, 2, 1, 1)
    shifted = temporal_shift(x, torch.tensor([0.25, -0.5]))
    # Channel 0 reads t + 0.25: 0.75·x[t] + 0.25·x[t+1], zero past the end.
    assert shifted[0, 0, :, 0].tolist() == [1.25, 2.25, 3.25, 4.25, 3.75]
    # Channel 1 reads t - 0.5: 0.5·x[t-1] + 0.5·x[t], zero before the start.
    assert shifted[0, 1, :, 0].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5]


def test_strided_shift_reads_half_a_frame_later() -> None:
    shift = TemporalShift(2, stride=2)
    with torch.no_grad():
        shift.offsets.copy_(torch.tensor([0.0, -0.5]))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).view(1, 1, 6, 1).repeat(1, 2, 1, 1)
    shifted = shift(x)
    assert shifted.shape == (1, 2, 3, 1)
    # The kernel adds 0.5 to strided offsets: output t reads input 2t + offset + 0.5.
    assert shifted[0, 0, :, 0].tolist() == [1.5, 3.5, 5.5]
    assert shifted[0, 1, :, 0].tolist() == [1.0, 3.0, 5.0]


def test_offset_gradient_is_the_reference_sign_rule() -> None:
    torch.manual_seed(0)
    shift = TemporalShift(6)
    x = torch.randn(2, 6, 9, 3)
    weights = torch.randn(2, 6, 9, 3)
    (shift(x) * weights).sum().backward()
    plain = shift.offsets.detach().clone().requires_grad_(True)
    (temporal_shift(x, plain) * weights).sum().backward()
    assert plain.grad is not None and bool((plain.grad != 0).all())
    torch.testing.assert_close(shift.offsets.grad, OFFSET_GRADIENT_STEP * torch.sign(plain.grad))


# --------------------------------------------------------------------------------------------
# Optimiser groups, determinism, FLOPs


def test_parameter_groups_cover_every_parameter_once() -> None:
    encoder = tiny_encoder()
    groups = encoder.parameter_groups(weight_decay=1e-4)
    grouped = [id(p) for group in groups for p in group["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in encoder.parameters()}
    decay = {group["name"]: group["weight_decay"] for group in groups}
    assert decay == pytest.approx(
        {"default": 1e-4, "shift_gcn_linear_weight": 1e-3, "shift_gcn_feature_mask": 0.0}
    )
    by_name = {id(p): name for name, p in encoder.named_parameters()}
    linear_group = next(g for g in groups if g["name"] == "shift_gcn_linear_weight")
    assert all(by_name[id(p)].endswith("linear_weight") for p in linear_group["params"])
    assert len(linear_group["params"]) == len(TINY.channels)
    torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)


def test_same_seed_gives_identical_outputs() -> None:
    x = skeletons()
    first, second = tiny_encoder(seed=3), tiny_encoder(seed=3)
    assert torch.equal(first(x), second(x))
    assert not torch.equal(first(x), tiny_encoder(seed=4)(x))


def test_encoder_flops_match_hand_count_and_flop_counter() -> None:
    # Per body: unit 1 (3→8, T=16): 19,200 linear + 19,200 down + 51,200 temporal conv;
    # unit 2 (8→8, stride 2): 51,200 + 51,200 + 25,600 residual;
    # unit 3 (8→16, T=8): 51,200 + 51,200 down + 102,400 + 51,200 residual. Two bodies.
    assert encoder_flops(TINY, window=16, num_joints=JOINTS, max_bodies=2) == 947_200
    encoder = tiny_encoder().eval()
    x = skeletons(batch=2)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder.features(x)
    assert counter.get_total_flops() / 2 == 947_200


def test_reference_encoder_flops() -> None:
    flops = encoder_flops(EncoderConfig(), window=64, num_joints=25, max_bodies=2)
    assert flops == pytest.approx(1.523e9, rel=1e-3)


# --------------------------------------------------------------------------------------------
# The fast encoder equals the simple reference implementation


class _TrueOffsetGradient:
    """Stands in for the offsets' sign-rule gradient: the offsets themselves."""

    @staticmethod
    def apply(offsets: torch.Tensor) -> torch.Tensor:
        return offsets


def reference_copy(encoder: ShiftGCN, cfg: EncoderConfig) -> reference_encoder.ShiftGCN:
    """The reference implementation with the same weights (same state-dict layout)."""
    reference = reference_encoder.ShiftGCN(
        cfg, num_classes=encoder.num_classes, num_joints=encoder.num_joints
    )
    reference.load_state_dict(encoder.state_dict())
    return reference


@pytest.mark.parametrize("window", [16, 15])
@pytest.mark.parametrize("training", [True, False])
def test_fast_encoder_equals_reference_outputs_gradients_and_statistics(
    window: int, training: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Offsets spread over several frames so that both interpolation neighbours, the zero padding
    # and the strided shift are exercised; a temporal kernel of 3 as well.
    # The offsets' sign rule (tested above) flips on rounding noise where the true gradient is
    # near zero, so both implementations compare the true offset gradients here.
    for implementation in (encoder_module, reference_encoder):
        monkeypatch.setattr(implementation, "_ReferenceOffsetGradient", _TrueOffsetGradient)
    cfg = EncoderConfig(channels=(8, 16, 16), stride_units=(1,), temporal_kernel=3)
    torch.manual_seed(5)
    encoder = ShiftGCN(cfg, num_classes=CLASSES, num_joints=JOINTS)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, TemporalShift):
                module.offsets.uniform_(-3.5, 3.5)
            if isinstance(module, ShiftGraphConv):
                module.feature_mask.normal_(0.0, 0.5)
    reference = reference_copy(encoder, cfg)
    encoder.train(training)
    reference.train(training)
    x = skeletons(batch=4, window=window)
    fast_input, reference_input = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.randn(4, CLASSES)
    fast_features, fast_logits = encoder.features(fast_input), encoder(fast_input)
    reference_features = reference.features(reference_input)
    reference_logits = reference(reference_input)
    # Float reassociation only: training-mode BatchNorm over a batch of 4 divides by small
    # standard deviations, which amplifies 1e-7 summation-order differences (they depend on the
    # thread count) to ~3e-5; a wrong shift or permutation differs by O(1).
    rtol, atol = 1e-3, 1e-4
    torch.testing.assert_close(fast_features, reference_features, rtol=rtol, atol=atol)
    torch.testing.assert_close(fast_logits, reference_logits, rtol=rtol, atol=atol)
    (fast_logits * weights).sum().backward()
    (reference_logits * weights).sum().backward()
    torch.testing.assert_close(fast_input.grad, reference_input.grad, rtol=rtol, atol=atol)
    fast_parameters = dict(encoder.named_parameters())
    for name, parameter in reference.named_parameters():
        assert parameter.grad is not None, name
        torch.testing.assert_close(
            fast_parameters[name].grad, parameter.grad, rtol=rtol, atol=atol, msg=name
        )
    fast_state = encoder.state_dict()
    assert list(fast_state) == list(reference.state_dict())
    for name, value in reference.state_dict().items():  # running statistics
        torch.testing.assert_close(fast_state[name], value, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("frames", [9, 10])
def test_fast_temporal_shift_equals_reference(stride: int, frames: int) -> None:
    generator = torch.Generator().manual_seed(stride * 10 + frames)
    x = torch.randn(2, 6, frames, 4, generator=generator)
    offsets = torch.tensor([-12.3, -2.5, -0.25, 0.0, 1.75, 11.0])  # some read only zero frames
    fast_input, reference_input = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast_offsets, reference_offsets = (
        offsets.clone().requires_grad_(),
        offsets.clone().requires_grad_(),
    )
    fast = temporal_shift(fast_input, fast_offsets, stride)
    reference = reference_encoder.temporal_shift(reference_input, reference_offsets, stride)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    weights = torch.randn(reference.shape, generator=generator)
    (fast * weights).sum().backward()
    (reference * weights).sum().backward()
    torch.testing.assert_close(fast_input.grad, reference_input.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_offsets.grad, reference_offsets.grad, rtol=1e-4, atol=1e-5)


def test_column_selection_is_the_same_copy_on_one_and_on_several_threads() -> None:
    """`_select_columns` takes `index_select` on one CPU thread and a gather on more."""
    x = torch.randn(7, 40)
    index = torch.randperm(40)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _select_columns(x, index)
        torch.set_num_threads(2)
        several = _select_columns(x, index)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, x[:, index])
    assert torch.equal(several, x[:, index])
