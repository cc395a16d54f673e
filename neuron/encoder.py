"""Shift-GCN skeleton encoder (joint stream), stage 1 of Neuron.

Cheng et al., "Skeleton-Based Action Recognition with Shift Graph Convolutional Network",
CVPR 2020, as used by Neuron (Chen et al., CVPR 2025, arXiv 2411.11288). Layer by layer this is
the reference's `Model` in `model/shiftgcn_match.py` of github.com/cseeyangchen/Neuron, including
its initialisation. See NEURON.md, "Shift-GCN encoder".

Where it deliberately differs from the reference:
- The temporal shift is pure PyTorch (gather + linear interpolation) instead of the CUDA kernel,
  so it runs on CPU and GPU. Its forward is the kernel's: output frame t reads input frame
  `t * stride + offset` (offset + 0.5 when strided), interpolated between the two neighbouring
  frames, zero outside the sequence. The kernel's gradient rule for the offsets is kept: the
  offset gradient is replaced by 0.01 · sign(gradient) (1e-4 where it is exactly zero), which is
  what the kernel's `applyShiftConstraint` returns.
- The kernel also carries a joint-axis offset (`xpos`) initialised in ±1e-8 whose gradient the
  kernel multiplies by 0; it never moves, reads the unshifted joint in float32 and is omitted.
- A strided shift outputs ceil(T / stride) frames (the kernel: T // stride), so that an odd
  number of frames matches the strided residual convolution; for even T the two agree.
- The number of joints and bodies are arguments instead of the hard-coded 25 and 2, and the
  channel plan, stride units and temporal kernel come from `EncoderConfig`.
- The spatial shift indices are non-persistent buffers (the reference stores them as frozen
  parameters in the state dict).

Speed (same numbers as the simple version kept in `tests/neuron/reference_encoder.py`, within
float rounding; a test checks outputs, gradients and running statistics): every unit works on
channels-last tensors, so the (N, C, T, V) ↔ (N·T, V·C) reshapes around the spatial shift are free
views and the 1×1 convolutions run as plain matrix products; the spatial shifts are one column
selection each on the (N·T, V·C) rows, whose gradient is the inverse permutation (a gather, not a
zero-fill + scatter); the linear is one `addmm`. The temporal shift reads the interpolation
neighbours with one column selection of precomputed flat positions (with stride 1, T + 1 frames:
output t's later neighbour is output t + 1's earlier one), zeroes in place the few reads that fall
outside the sequence, and blends them with one `lerp` (instead of two `gather`s with full-size
expanded indices, validity masks and three multiplications); its backward is the same two-frame
read of the gradient, again without a scatter. Column selections are a gather with the index
broadcast over rows, which CPU threads share (`index_select`, used on one thread, is serial).

On CPU most of a step is memory traffic, and the large activations are only fast when the C
allocator keeps freed memory for the next step (`neuron.device.keep_host_memory`, which stage 1,
the feature cache and stage 2 run inside).
"""

from __future__ import annotations

import math
import typing

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuron.config import EncoderConfig

OFFSET_GRADIENT_STEP = 0.01
"""Magnitude of the reference kernel's offset gradient: 0.01 · sign(dL/d offset)."""
OFFSET_GRADIENT_AT_ZERO = 1e-4
"""The reference kernel's offset gradient where the true gradient is exactly zero."""


def _conv_init(conv: nn.Conv2d) -> None:
    """Kaiming normal (fan out) weight and zero bias, as the reference's `conv_init`."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


# --------------------------------------------------------------------------------------------
# Spatial shift graph convolution


def spatial_shift_index(num_joints: int, channels: int, direction: int) -> Tensor:
    """Index into a flattened (V·C) joint-channel row that shifts channel j by `direction · j` joints.

    With `direction = +1` (shift-in) channel j of joint i reads joint (i + j) mod V; with
    `direction = -1` (shift-out) it reads joint (i - j) mod V. Shape (V·C,), long.
    """
    joint = torch.arange(num_joints).unsqueeze(1)  # (V, 1)
    channel = torch.arange(channels).unsqueeze(0)  # (1, C)
    source_joint = (joint + direction * channel) % num_joints  # (V, C)
    return (source_joint * channels + channel).reshape(-1)  # (V*C,)


def _select_columns(x: Tensor, index: Tensor) -> Tensor:
    """x[:, index] for a 2-D x. On one CPU thread `index_select`; otherwise a gather with the
    index broadcast over rows, the same copy, which CPU threads share (`index_select` along
    columns runs on one thread: measured at reference sizes, 2 threads, 0.81x the step time)."""
    if x.device.type == "cpu" and torch.get_num_threads() == 1:
        return x.index_select(1, index)
    return x.gather(1, index.expand(x.shape[0], -1))  # (R, K), index a broadcast view


class _ColumnPermutation(torch.autograd.Function):
    """Columns of x (R, K) reordered by `index`; the gradient reorders back by its inverse
    (a gather, where `index_select`'s own backward zero-fills and scatters)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: Tensor, index: Tensor, inverse: Tensor
    ) -> Tensor:
        ctx.save_for_backward(inverse)
        return _select_columns(x, index)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, gradient: Tensor
    ) -> tuple[Tensor, None, None]:
        (inverse,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return _select_columns(gradient, inverse), None, None


class ShiftGraphConv(nn.Module):
    """shift_gcn: shift-in, feature mask, linear C_in→C_out, shift-out, BN, residual, ReLU."""

    shift_in_index: Tensor
    shift_out_index: Tensor

    def __init__(self, in_channels: int, out_channels: int, num_joints: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_joints = num_joints
        self.linear_weight = nn.Parameter(torch.empty(in_channels, out_channels))
        nn.init.normal_(self.linear_weight, 0.0, math.sqrt(1.0 / out_channels))
        self.linear_bias = nn.Parameter(torch.zeros(out_channels))
        # Learnable feature mask; tanh(0) + 1 = 1, so it starts as the identity.
        self.feature_mask = nn.Parameter(torch.zeros(1, num_joints, in_channels))
        self.norm = nn.BatchNorm1d(num_joints * out_channels)
        if in_channels != out_channels:
            self.down: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels)
            )
            _conv_init(typing.cast(nn.Conv2d, self.down[0]))
        else:
            self.down = nn.Identity()
        self.register_buffer(
            "shift_in_index", spatial_shift_index(num_joints, in_channels, +1), persistent=False
        )
        self.register_buffer(
            "shift_out_index", spatial_shift_index(num_joints, out_channels, -1), persistent=False
        )
        # A shift-in permutation's inverse is the shift-out one of the same width, and vice versa.
        self.register_buffer(
            "shift_in_inverse", spatial_shift_index(num_joints, in_channels, -1), persistent=False
        )
        self.register_buffer(
            "shift_out_inverse", spatial_shift_index(num_joints, out_channels, +1), persistent=False
        )

    def shifted_linear(self, x: Tensor) -> Tensor:
        """Shift-in, mask, linear, shift-out of x (N, C_in, T, V) → (N·T, V·C_out), before BN.

        x may have any memory layout; channels-last (what the units pass) makes the first
        reshape a view.
        """
        batch, channels, frames, joints = x.shape
        features = x.permute(0, 2, 3, 1).reshape(batch * frames, joints * channels)  # (N*T, V*C_in)
        features = _ColumnPermutation.apply(
            features, self.shift_in_index, self.shift_in_inverse
        )  # (N*T, V*C_in)
        features = features.view(batch * frames, joints, channels) * (
            torch.tanh(self.feature_mask) + 1
        )  # (N*T, V, C_in)
        features = torch.addmm(
            self.linear_bias, features.view(-1, channels), self.linear_weight
        )  # (N*T*V, C_out)
        features = features.view(batch * frames, joints * self.out_channels)  # (N*T, V*C_out)
        return _ColumnPermutation.apply(features, self.shift_out_index, self.shift_out_inverse)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C_in, T, V) → (N, C_out, T, V), channels-last."""
        batch, _, frames, joints = x.shape
        features = self.norm(self.shifted_linear(x))  # (N*T, V*C_out)
        features = features.view(batch, frames, joints, self.out_channels).permute(
            0, 3, 1, 2
        )  # (N, C_out, T, V), a channels-last view
        return F.relu(features + self.down(x), inplace=True)


# --------------------------------------------------------------------------------------------
# Temporal shift convolution


class _ReferenceOffsetGradient(torch.autograd.Function):
    """Identity on the offsets whose backward returns the CUDA kernel's constrained gradient."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, offsets: Tensor) -> Tensor:
        return offsets.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, gradient: Tensor) -> Tensor:
        return torch.where(
            gradient != 0,
            OFFSET_GRADIENT_STEP * torch.sign(gradient),
            torch.full_like(gradient, OFFSET_GRADIENT_AT_ZERO),
        )


def _upsampled(x: Tensor, stride: int) -> Tensor:
    """x (N, T, V, C) with `stride - 1` zero frames after each frame: (N, T·stride, V, C)."""
    batch, frames, joints, channels = x.shape
    out = x.new_empty(batch, frames, stride, joints, channels)  # (N, T, s, V, C)
    out[:, :, 0] = x
    out[:, :, 1:].zero_()
    return out.view(batch, frames * stride, joints, channels)


def _interpolated_read(
    x: Tensor, first: Tensor, step: int, out_frames: int, fraction: Tensor, second: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Read frames `t·step + first[c]` and `t·step + first[c] + second` (second = ±1) of
    x (N, T, V, C) for t < out_frames (zero outside [0, T)) and blend them with `fraction[c]` of
    the second.

    Returns the blend and the two reads, each (N, T_out, V, C). With step 1, output t's later
    neighbour is output t + 1's earlier one, so T_out + 1 frames are read once and the two reads
    are views of them. A frame outside [0, T) is read clamped and zeroed in place afterwards
    (cheaper than copying x into a zero-padded buffer first).
    """
    batch, frames, joints, channels = x.shape
    device = x.device
    if step == 1:
        earlier = first + min(second, 0)  # (C,), frame of output 0's earlier read
        rows = torch.arange(out_frames + 1, device=device).view(-1, 1) + earlier  # (T_out+1, C)
    else:
        lower = torch.arange(out_frames, device=device).view(-1, 1) * step + first
        rows = torch.cat((lower, lower + second))  # (2*T_out, C)
    outside = (rows < 0) | (rows >= frames)  # (R, C)
    rows = rows.clamp(0, frames - 1)
    joint = torch.arange(joints, device=device).view(1, joints, 1)  # (1, V, 1)
    channel = torch.arange(channels, device=device)  # (C,)
    flat = (rows.unsqueeze(1) * joints + joint) * channels + channel  # (R, V, C)
    reads = _select_columns(x.reshape(batch, -1), flat.view(-1))  # (N, R*V*C)
    reads = reads.view(batch, len(rows), joints, channels)  # (N, R, V, C)
    # A product, not masked_fill_ (3x slower with a broadcast mask on CPU): activations are
    # finite, so x * 1 = x and x * 0 = 0 exactly.
    reads.mul_((~outside).unsqueeze(1).to(reads.dtype))  # (R, 1, C) over (N, R, V, C)
    if step == 1:
        earlier_read, later_read = reads[:, :-1], reads[:, 1:]  # (N, T_out, V, C) each
        first_read, second_read = (
            (earlier_read, later_read) if second > 0 else (later_read, earlier_read)
        )
    else:
        first_read, second_read = reads[:, :out_frames], reads[:, out_frames:]
    return torch.lerp(first_read, second_read, fraction), first_read, second_read


class _TemporalShiftFunction(torch.autograd.Function):
    """The interpolated shift with a gather-only backward.

    Output t reads (1 - f)·x[t·s + b] + f·x[t·s + b + 1], so input frame u receives
    (1 - f)·g[(u - b)/s] + f·g[(u - b - 1)/s]: the same two-frame read of the stride-upsampled
    gradient at offset -b (second neighbour one frame earlier). No zero-filled scatter.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        fraction: Tensor,
        base: Tensor,
        stride: int,
    ) -> Tensor:
        frames = x.shape[2]
        out_frames = -(-frames // stride)
        shifted, first_read, second_read = _interpolated_read(
            x.permute(0, 2, 3, 1), base, stride, out_frames, fraction, +1
        )  # (N, T_out, V, C) each
        ctx.save_for_backward(first_read, second_read, fraction, base)
        ctx.stride, ctx.frames = stride, frames  # type: ignore[attr-defined]
        return shifted.permute(0, 3, 1, 2)  # (N, C, T_out, V), channels-last

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, gradient: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None]:
        first_read, second_read, fraction, base = ctx.saved_tensors  # type: ignore[attr-defined]
        stride, frames = ctx.stride, ctx.frames  # type: ignore[attr-defined]
        rows = gradient.permute(0, 2, 3, 1)  # (N, T_out, V, C)
        input_gradient = fraction_gradient = None
        if ctx.needs_input_grad[1]:  # type: ignore[attr-defined]
            fraction_gradient = (rows * (second_read - first_read)).sum((0, 1, 2))  # (C,)
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            if stride > 1:
                rows = _upsampled(rows, stride)  # (N, T_out*stride, V, C)
            input_gradient, _, _ = _interpolated_read(
                rows, -base, 1, frames, fraction, -1
            )  # (N, T, V, C)
            input_gradient = input_gradient.permute(0, 3, 1, 2)  # (N, C, T, V)
        return input_gradient, fraction_gradient, None, None


def temporal_shift(x: Tensor, offsets: Tensor, stride: int = 1) -> Tensor:
    """Shift every channel of x (N, C, T, V) in time by its real-valued offset, zero padded.

    Output frame t of channel c is x[c, t·stride + offsets[c]], linearly interpolated between the
    two neighbouring frames; frames outside [0, T) read zero. Returns (N, C, ceil(T/stride), V)
    in channels-last memory format.
    """
    base = torch.floor(offsets).detach()  # (C,)
    fraction = offsets - base  # (C,), carries the offset gradient
    return _TemporalShiftFunction.apply(x, fraction, base.long(), stride)


class TemporalShift(nn.Module):
    """Learnable per-channel temporal shift (the reference's `Shift` CUDA module, pure torch)."""

    def __init__(self, channels: int, stride: int = 1, init_scale: float = 1.0) -> None:
        super().__init__()
        self.stride = stride
        self.offsets = nn.Parameter(torch.empty(channels).uniform_(-init_scale, init_scale))

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, T, V) → (N, C, ceil(T/stride), V)."""
        offsets = _ReferenceOffsetGradient.apply(self.offsets)
        if self.stride != 1:
            # The kernel reads strided outputs half a frame later (`ypos + 0.5`).
            offsets = offsets + 0.5
        return temporal_shift(x, offsets, self.stride)


class ShiftTemporalConv(nn.Module):
    """shift_tcn: BN, temporal shift, 1x1 conv, ReLU, temporal shift with stride, BN."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, kernel: int = 1
    ) -> None:
        super().__init__()
        self.norm_in = nn.BatchNorm2d(in_channels)
        self.shift_in = TemporalShift(in_channels, stride=1)
        self.temporal_linear = nn.Conv2d(
            in_channels, out_channels, (kernel, 1), padding=((kernel - 1) // 2, 0)
        )
        # The reference initialises only the weight; the bias keeps PyTorch's default.
        nn.init.kaiming_normal_(self.temporal_linear.weight, mode="fan_out")
        self.shift_out = TemporalShift(out_channels, stride=stride)
        self.norm_out = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C_in, T, V) → (N, C_out, ceil(T/stride), V)."""
        x = self.shift_in(self.norm_in(x))
        x = F.relu(self.temporal_linear(x), inplace=True)
        return self.norm_out(self.shift_out(x))


# --------------------------------------------------------------------------------------------
# Units and the network


class ShiftGCNUnit(nn.Module):
    """relu(shift_tcn(shift_gcn(x)) + residual(x)); residual is 1x1 conv + BN when the shape changes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_joints: int,
        stride: int = 1,
        residual: bool = True,
        temporal_kernel: int = 1,
    ) -> None:
        super().__init__()
        self.graph_conv = ShiftGraphConv(in_channels, out_channels, num_joints)
        self.temporal_conv = ShiftTemporalConv(
            out_channels, out_channels, stride=stride, kernel=temporal_kernel
        )
        self.has_residual = residual
        if residual and (in_channels != out_channels or stride != 1):
            conv = nn.Conv2d(in_channels, out_channels, 1, stride=(stride, 1))
            _conv_init(conv)
            self.residual: nn.Module = nn.Sequential(conv, nn.BatchNorm2d(out_channels))
        else:
            self.residual = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C_in, T, V) → (N, C_out, ceil(T/stride), V)."""
        out = self.temporal_conv(self.graph_conv(x))
        if self.has_residual:
            out = out + self.residual(x)
        return F.relu(out, inplace=True)


class ShiftGCN(nn.Module):
    """Joint-stream Shift-GCN: input BN over M·V·C, `len(cfg.channels)` units, pooled classifier.

    The first unit has no unit-level residual, as in the reference (`residual=False` on `l1`).
    """

    def __init__(
        self,
        cfg: EncoderConfig,
        num_classes: int,
        num_joints: int = 25,
        in_channels: int = 3,
        max_bodies: int = 2,
    ) -> None:
        super().__init__()
        if cfg.temporal_kernel < 1 or cfg.temporal_kernel % 2 == 0:
            raise ValueError(
                f"model.encoder.temporal_kernel={cfg.temporal_kernel}: must be a positive odd number "
                "(the convolution keeps the frame count), e.g. 1 as in the reference"
            )
        self.cfg = cfg
        self.num_classes = num_classes
        self.num_joints = num_joints
        self.in_channels = in_channels
        self.max_bodies = max_bodies
        self.feature_channels = cfg.feature_channels
        self.input_norm = nn.BatchNorm1d(max_bodies * num_joints * in_channels)
        units = []
        previous = in_channels
        for index, channels in enumerate(cfg.channels):
            units.append(
                ShiftGCNUnit(
                    previous,
                    channels,
                    num_joints,
                    stride=2 if index in cfg.stride_units else 1,
                    residual=index > 0,
                    temporal_kernel=cfg.temporal_kernel,
                )
            )
            previous = channels
        self.units = nn.Sequential(*units)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.feature_channels, num_classes)
        nn.init.normal_(self.classifier.weight, 0.0, math.sqrt(2.0 / num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Skeletons x (N, C, T, V, M) → feature map (N, C_out, T', V), averaged over bodies."""
        if (
            x.dim() != 5
            or x.shape[1] != self.in_channels
            or x.shape[3] != self.num_joints
            or x.shape[4] != self.max_bodies
        ):
            raise ValueError(
                f"ShiftGCN input has shape {tuple(x.shape)}: expected (N, C={self.in_channels}, T, "
                f"V={self.num_joints}, M={self.max_bodies})"
            )
        batch, channels, frames, joints, bodies = x.shape
        x = x.permute(0, 4, 3, 1, 2).reshape(
            batch, bodies * joints * channels, frames
        )  # (N, M*V*C, T)
        x = self.input_norm(x)
        x = x.view(batch, bodies, joints, channels, frames).permute(
            0, 1, 4, 2, 3
        )  # (N, M, T, V, C)
        x = x.reshape(batch * bodies, frames, joints, channels).permute(
            0, 3, 1, 2
        )  # (N*M, C, T, V), channels-last
        x = self.units(x)  # (N*M, C_out, T', V), channels-last
        x = x.reshape(batch, bodies, *x.shape[1:])  # (N, M, C_out, T', V)
        return x.mean(1).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        """Skeletons x (N, C, T, V, M) → class logits (N, num_classes) of the stage-1 classifier."""
        pooled = self.features(x).mean(dim=(2, 3))  # (N, C_out)
        return self.classifier(self.dropout(pooled))

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups with the reference's weight decay rule.

        The reference decays every parameter by 1e-4, the shift-GCN linear weights by 1e-3 and the
        feature masks not at all; relative to `weight_decay` that is ×10 and ×0.
        """
        linear_weights = [m.linear_weight for m in self.modules() if isinstance(m, ShiftGraphConv)]
        masks = [m.feature_mask for m in self.modules() if isinstance(m, ShiftGraphConv)]
        special = {id(p) for p in linear_weights + masks}
        rest = [p for p in self.parameters() if id(p) not in special]
        return [
            {"params": rest, "weight_decay": weight_decay, "name": "default"},
            {
                "params": linear_weights,
                "weight_decay": 10.0 * weight_decay,
                "name": "shift_gcn_linear_weight",
            },
            {"params": masks, "weight_decay": 0.0, "name": "shift_gcn_feature_mask"},
        ]


def pool_features(feature_map: Tensor) -> tuple[Tensor, Tensor]:
    """Feature map (N, C, T', V) → joint features (N, C, V) (mean over time) and frame features
    (N, C, T') (mean over joints)."""
    return feature_map.mean(2), feature_map.mean(3)


def encoder_flops(
    cfg: EncoderConfig, window: int, num_joints: int, max_bodies: int, in_channels: int = 3
) -> float:
    """Forward FLOPs per sample of `ShiftGCN.features` (2 × multiply-adds of convs and linears).

    Counts the shift-GCN linear, its 1x1 down-projection, the shift-TCN temporal convolution and
    the unit residual convolution, per body; batch norms, shifts, masks and pooling are not counted.
    """
    total = 0.0
    previous = in_channels
    frames = window
    for index, channels in enumerate(cfg.channels):
        stride = 2 if index in cfg.stride_units else 1
        out_frames = -(-frames // stride)
        positions = frames * num_joints
        total += positions * previous * channels  # shift-GCN linear
        if previous != channels:
            total += positions * previous * channels  # shift-GCN down-projection
        total += positions * channels * channels * cfg.temporal_kernel  # shift-TCN temporal conv
        if index > 0 and (previous != channels or stride != 1):
            total += out_frames * num_joints * previous * channels  # unit residual conv
        previous = channels
        frames = out_frames
    return 2.0 * total * max_bodies
