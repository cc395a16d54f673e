"""The previous, simple Shift-GCN implementation, kept as the readable reference.

`neuron.encoder` is the fast version; tests check that both give the same outputs, gradients,
running statistics and state-dict layout. This file is the pre-optimisation `neuron/encoder.py`
(its classes unchanged): shifts as `index_select` / `gather` on channels-first tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuron.config import EncoderConfig
from neuron.encoder import OFFSET_GRADIENT_AT_ZERO, OFFSET_GRADIENT_STEP, spatial_shift_index


def _conv_init(conv: nn.Conv2d) -> None:
    """Kaiming normal (fan out) weight and zero bias, as the reference's `conv_init`."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


# --------------------------------------------------------------------------------------------
# Spatial shift graph convolution


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
            _conv_init(self.down[0])  # type: ignore[arg-type]  # the Conv2d of the Sequential
        else:
            self.down = nn.Identity()
        self.register_buffer(
            "shift_in_index", spatial_shift_index(num_joints, in_channels, +1), persistent=False
        )
        self.register_buffer(
            "shift_out_index", spatial_shift_index(num_joints, out_channels, -1), persistent=False
        )

    def shifted_linear(self, x: Tensor) -> Tensor:
        """Shift-in, mask, linear, shift-out of x (N, C_in, T, V) → (N·T, V·C_out), before BN."""
        batch, channels, frames, joints = x.shape
        features = x.permute(0, 2, 3, 1).reshape(batch * frames, joints * channels)  # (N*T, V*C_in)
        features = features.index_select(1, self.shift_in_index)
        features = features.view(batch * frames, joints, channels)  # (N*T, V, C_in)
        features = features * (torch.tanh(self.feature_mask) + 1)
        features = (
            torch.einsum("bvc,cd->bvd", features, self.linear_weight) + self.linear_bias
        )  # (N*T, V, C_out)
        features = features.reshape(batch * frames, joints * self.out_channels)  # (N*T, V*C_out)
        return features.index_select(1, self.shift_out_index)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C_in, T, V) → (N, C_out, T, V)."""
        batch, _, frames, joints = x.shape
        features = self.norm(self.shifted_linear(x))  # (N*T, V*C_out)
        features = features.view(batch, frames, joints, self.out_channels).permute(
            0, 3, 1, 2
        )  # (N, C_out, T, V)
        return F.relu(features + self.down(x))


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


def temporal_shift(x: Tensor, offsets: Tensor, stride: int = 1) -> Tensor:
    """Shift every channel of x (N, C, T, V) in time by its real-valued offset, zero padded.

    Output frame t of channel c is x[c, t·stride + offsets[c]], linearly interpolated between the
    two neighbouring frames; frames outside [0, T) read zero. Returns (N, C, ceil(T/stride), V).
    """
    batch, channels, frames, joints = x.shape
    out_frames = -(-frames // stride)
    base = torch.floor(offsets).detach()  # (C,)
    fraction = (offsets - base).view(1, channels, 1, 1)  # (1, C, 1, 1), carries the offset gradient
    start = torch.arange(out_frames, device=x.device) * stride  # (T_out,)
    lower = start.unsqueeze(0) + base.long().unsqueeze(1)  # (C, T_out)

    def read(index: Tensor) -> Tensor:
        valid = ((index >= 0) & (index < frames)).to(x.dtype)  # (C, T_out)
        gather_index = index.clamp(0, frames - 1).view(1, channels, out_frames, 1)
        gather_index = gather_index.expand(batch, channels, out_frames, joints)  # (N, C, T_out, V)
        return x.gather(2, gather_index) * valid.view(1, channels, out_frames, 1)

    return read(lower) * (1 - fraction) + read(lower + 1) * fraction


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
        x = F.relu(self.temporal_linear(x))
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
        return F.relu(out)


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
            0, 1, 3, 4, 2
        )  # (N, M, C, T, V)
        x = x.reshape(batch * bodies, channels, frames, joints)  # (N*M, C, T, V)
        x = self.units(x)  # (N*M, C_out, T', V)
        x = x.view(batch, bodies, *x.shape[1:])  # (N, M, C_out, T', V)
        return x.mean(1)

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
