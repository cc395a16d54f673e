"""Neuron: context-aware evolving micro-prototypes on a frozen Shift-GCN.

Yang Chen, Jingcai Guo, Song Guo, Dacheng Tao, "Learning Context-Aware Evolving Representations
for Zero-Shot Skeleton Action Recognition", CVPR 2025, arXiv 2411.11288. Reference code:
github.com/cseeyangchen/Neuron, `model/shiftgcn_match.py` (`ModelMatch`) and `main_match.py`.
NEURON.md restates the method; the notation below follows it.

Notation: N samples, C feature channels (256), V joints (25), T' feature frames (16), K
prototypes (80), S evolution steps (3), D text dimension, R side-information rounds (3), Q
descriptions per class and round.

Spatial branch (evolving micro-prototypes with spatial compression), step i = 1..S:
    A = F_sᵀ P^{i-1}                      joint-prototype affinity (N, V, K)
    W = softmax_V(A) ⊙ mask_i             each joint switches off its (compression_per_step · i)
                                          lowest-affinity prototypes (×1e-12, no renormalisation)
    H = F_s W                             (N, C, K)
    P^i = MLP_i(H)                        per-sample prototypes from step 1 on
    z^i = normalize(relu(Linear(mean_K P^i)))
Temporal branch (evolving micro-prototypes with temporal memory), step i = 1..S:
    X_i = F_t[:, :, :window_i]            growing prefix of the feature frames
    α = softmax_T(X_iᵀ Q^{i-1}),  U = X_i α   (N, C, K)
    Q^i = σ(MLP_rec(U)) ⊙ Q^{i-1} + σ(MLP_mem(U)) ⊙ MLP_upd(U)      ("gated")
    Q^i = MLP_upd(U)                                                  ("replace", ablation)
    z^i as in the spatial branch, with the temporal projection.
Logits: s_c = logit_scale · mean_q cos(z^i, e_{c,q}), step i against round R - S + i.
Loss: Σ_branch w_branch · Σ_i w_i · CE(step i); the defaults give ½[⅓Σ + ⅓Σ] as the reference.

Prototypes are kept as (N, K, C) here (the reference keeps (N, C, K)); the arithmetic is the same.

Where this deliberately differs from the reference:
1. Every constant is a `ModelConfig` field: prototype counts, compression per step, temporal
   windows, number of steps, MLP width, logit scale (hard-coded 0.1 in the reference) and loss
   weights. With S < 3 steps, step i uses side-information round R - S + i, temporal window
   `temporal_windows[i]` and drops `compression_per_step · i` prototypes, so one step uses the
   finest round; the reference always runs three.
2. Ablation switches the reference does not have: `compression: false` (no mask), `memory:
   replace`, `branches: spatial | temporal`, and `gate: sigmoid`, which drops the final ReLU of
   the recall and memory gate MLPs so the gates span (0, 1); `relu_sigmoid` (default) keeps the
   reference's ReLU, with gates in [0.5, 1).
3. With a single branch its loss has weight 1 (the branch weight is renormalised), so the
   spatial-only or temporal-only loss is on the same scale as the two-branch loss.
4. The encoder stays in eval mode and runs without gradients. The reference calls `train()` on
   the whole model in stage 2, so its frozen encoder normalises with batch statistics and keeps
   updating BatchNorm running statistics; no feature cache can reproduce that, and `NeuronModel`
   (the "reference path" through the encoder) gives the same features as the cache.
5. Per-step MLPs are initialised independently. The reference deep-copies one template per
   kind, so all steps start from identical weights (and the temporal recall and memory gates
   start as copies of the spatial template); it also registers those two unused templates
   (263 k parameters that never get a gradient), which are not created here.
6. Compression ranks prototypes by the affinity A; the reference ranks softmax_K(A), which has
   the same order except for ties that the softmax creates by underflow.
7. Logits average the cosine over all Q descriptions; the reference averages the top 10, which
   is the same for the shipped Q = 10 descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuron.config import ModelConfig
from neuron.encoder import ShiftGCN, pool_features

DROPPED_WEIGHT = 1e-12
"""Factor the reference multiplies switched-off joint-prototype weights by (not renormalised)."""


# --------------------------------------------------------------------------------------------
# Small blocks


def prototype_mlp(channels: int, hidden: int, final_relu: bool = True) -> nn.Sequential:
    """The reference's 2-layer MLP C→hidden→C with a ReLU after each layer."""
    layers: list[nn.Module] = [nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels)]
    if final_relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def embed(projection: nn.Linear, prototypes: Tensor) -> Tensor:
    """z = normalize(relu(Linear(mean over K of prototypes))): (N, K, C) → (N, D)."""
    return F.normalize(F.relu(projection(prototypes.mean(1))), p=2, dim=-1)


def compression_mask(affinity: Tensor, dropped: int) -> Tensor:
    """Mask (N, V, K): `DROPPED_WEIGHT` at each joint's `dropped` lowest-affinity prototypes, else 1."""
    mask = torch.ones_like(affinity)
    if dropped > 0:
        lowest = affinity.detach().topk(dropped, dim=2, largest=False).indices  # (N, V, dropped)
        mask.scatter_(2, lowest, DROPPED_WEIGHT)
    return mask


def joint_attention(joint_features: Tensor, prototypes: Tensor, dropped: int) -> Tensor:
    """W = softmax over joints of A = F_sᵀ P, times the compression mask.

    joint_features (N, C, V), prototypes (N, K, C) → W (N, V, K).
    """
    affinity = torch.einsum("ncv,nkc->nvk", joint_features, prototypes)  # (N, V, K)
    return F.softmax(affinity, dim=1) * compression_mask(affinity, dropped)


def frame_attention(frame_features: Tensor, prototypes: Tensor) -> Tensor:
    """U = X α with α = softmax over time of Xᵀ Q.

    frame_features (N, C, T_i), prototypes (N, K, C) → U as (N, K, C).
    """
    affinity = torch.einsum("nct,nkc->ntk", frame_features, prototypes)  # (N, T_i, K)
    weights = F.softmax(affinity, dim=1)
    return torch.einsum("nct,ntk->nkc", frame_features, weights)  # (N, K, C)


class MemoryUpdate(nn.Module):
    """One temporal step: Q^i from the pooled frames U and Q^{i-1} (gated memory or replacement)."""

    def __init__(
        self, channels: int, hidden: int, memory: str = "gated", gate: str = "relu_sigmoid"
    ) -> None:
        super().__init__()
        self.memory = memory
        self.update = prototype_mlp(channels, hidden)
        if memory == "gated":
            # The reference ends every gate MLP in a ReLU, so σ(·) ∈ [0.5, 1); `sigmoid` drops it.
            gate_relu = gate == "relu_sigmoid"
            self.recall = prototype_mlp(channels, hidden, final_relu=gate_relu)
            self.remember = prototype_mlp(channels, hidden, final_relu=gate_relu)

    def forward(self, pooled: Tensor, previous: Tensor) -> Tensor:
        """pooled U (N, K, C), previous Q^{i-1} (N, K, C) → Q^i (N, K, C)."""
        if self.memory == "replace":
            return self.update(pooled)
        recalled = torch.sigmoid(self.recall(pooled)) * previous
        remembered = torch.sigmoid(self.remember(pooled)) * self.update(pooled)
        return recalled + remembered


# --------------------------------------------------------------------------------------------
# Branches


class SpatialBranch(nn.Module):
    """Evolving micro-prototypes with spatial compression: F_s (N, C, V) → z (S, N, D)."""

    def __init__(self, cfg: ModelConfig, channels: int, text_dim: int) -> None:
        super().__init__()
        self.compression_per_step = cfg.compression_per_step if cfg.compression else 0
        # P⁰, drawn from N(0, 1) like the reference's nn.Embedding.
        self.prototypes = nn.Parameter(torch.randn(cfg.spatial_prototypes, channels))
        self.updates = nn.ModuleList(prototype_mlp(channels, cfg.hidden) for _ in range(cfg.steps))
        self.projection = nn.Linear(channels, text_dim)

    def dropped(self, step: int) -> int:
        """Prototypes each joint switches off at 1-based `step`."""
        return self.compression_per_step * step

    def forward(self, joint_features: Tensor) -> Tensor:
        batch = joint_features.shape[0]
        prototypes = self.prototypes.unsqueeze(0).expand(batch, -1, -1)  # (N, K, C)
        embeddings = []
        for step, update in enumerate(self.updates, start=1):
            weights = joint_attention(joint_features, prototypes, self.dropped(step))  # (N, V, K)
            pooled = torch.einsum("ncv,nvk->nkc", joint_features, weights)  # H as (N, K, C)
            prototypes = update(pooled)  # P^i (N, K, C)
            embeddings.append(embed(self.projection, prototypes))
        return torch.stack(embeddings)  # (S, N, D)


class TemporalBranch(nn.Module):
    """Evolving micro-prototypes with temporal memory: F_t (N, C, T') → z (S, N, D)."""

    def __init__(self, cfg: ModelConfig, channels: int, text_dim: int) -> None:
        super().__init__()
        self.windows = tuple(cfg.temporal_windows)
        # Q⁰, drawn from N(0, 1) like the reference's nn.Embedding.
        self.prototypes = nn.Parameter(torch.randn(cfg.temporal_prototypes, channels))
        self.steps = nn.ModuleList(
            MemoryUpdate(channels, cfg.hidden, cfg.memory, cfg.gate) for _ in range(cfg.steps)
        )
        self.projection = nn.Linear(channels, text_dim)

    def forward(self, frame_features: Tensor) -> Tensor:
        batch = frame_features.shape[0]
        prototypes = self.prototypes.unsqueeze(0).expand(batch, -1, -1)  # (N, K, C)
        embeddings = []
        for window, memory_update in zip(self.windows, self.steps, strict=True):
            pooled = frame_attention(frame_features[:, :, :window], prototypes)  # U as (N, K, C)
            prototypes = memory_update(pooled, prototypes)  # Q^i (N, K, C)
            embeddings.append(embed(self.projection, prototypes))
        return torch.stack(embeddings)  # (S, N, D)


# --------------------------------------------------------------------------------------------
# The head


@dataclass(frozen=True)
class HeadOutput:
    """Unit-norm step embeddings z^i of each branch, (S, N, D); None for a switched-off branch."""

    spatial: Tensor | None
    temporal: Tensor | None


class NeuronHead(nn.Module):
    """The trainable part of Neuron: spatial and temporal evolving micro-prototypes."""

    def __init__(
        self,
        cfg: ModelConfig,
        feature_channels: int,
        text_dim: int,
        num_joints: int,
        feature_frames: int,
    ) -> None:
        super().__init__()
        uses_temporal = cfg.branches in ("both", "temporal")
        if uses_temporal and max(cfg.temporal_windows) > feature_frames:
            raise ValueError(
                f"model.temporal_windows={list(cfg.temporal_windows)}: the encoder's feature map has "
                f"{feature_frames} frames; use windows <= {feature_frames}"
            )
        self.cfg = cfg
        self.feature_channels = feature_channels
        self.text_dim = text_dim
        self.num_joints = num_joints
        self.feature_frames = feature_frames
        self.spatial = (
            SpatialBranch(cfg, feature_channels, text_dim)
            if cfg.branches in ("both", "spatial")
            else None
        )
        self.temporal = TemporalBranch(cfg, feature_channels, text_dim) if uses_temporal else None

    def forward(self, joint_features: Tensor, frame_features: Tensor) -> HeadOutput:
        """joint_features (N, C, V), frame_features (N, C, T') → step embeddings of each branch."""
        expected_joints = (self.feature_channels, self.num_joints)
        if self.spatial is not None and (
            joint_features.dim() != 3 or joint_features.shape[1:] != expected_joints
        ):
            raise ValueError(
                f"joint_features has shape {tuple(joint_features.shape)}: expected "
                f"(N, C={self.feature_channels}, V={self.num_joints})"
            )
        last_window = self.cfg.temporal_windows[-1]
        if self.temporal is not None and (
            frame_features.dim() != 3
            or frame_features.shape[1] != self.feature_channels
            or frame_features.shape[2] < last_window
        ):
            raise ValueError(
                f"frame_features has shape {tuple(frame_features.shape)}: expected "
                f"(N, C={self.feature_channels}, T' >= {last_window}) for "
                f"model.temporal_windows={list(self.cfg.temporal_windows)}"
            )
        return HeadOutput(
            spatial=self.spatial(joint_features) if self.spatial is not None else None,
            temporal=self.temporal(frame_features) if self.temporal is not None else None,
        )


# --------------------------------------------------------------------------------------------
# Side information, logits and loss


def select_rounds(text: Tensor, steps: int) -> Tensor:
    """The last `steps` rounds of side information: (R, K_cls, Q, D) → (S, K_cls, Q, D).

    Step i (1-based) aligns with round R - S + i, so a single step uses the finest round.
    """
    if text.dim() != 4 or text.shape[0] < steps:
        raise ValueError(
            f"side-information tensor has shape {tuple(text.shape)}: expected (R, classes, "
            f"descriptions, D) with R >= model.steps={steps}"
        )
    return text[text.shape[0] - steps :]


def branch_logits(embeddings: Tensor, text: Tensor, logit_scale: float) -> Tensor:
    """s_c = logit_scale · mean over q of cos(z^i, e_{c,q}).

    embeddings (S, N, D) unit norm, text (R, K_cls, Q, D) → logits (S, N, K_cls).
    """
    descriptions = F.normalize(
        select_rounds(text, embeddings.shape[0]), p=2, dim=-1
    )  # (S, K_cls, Q, D)
    cosine = torch.einsum("snd,skqd->snkq", embeddings, descriptions)  # (S, N, K_cls, Q)
    return logit_scale * cosine.mean(-1)


def class_logits(
    output: HeadOutput, spatial_text: Tensor, temporal_text: Tensor, logit_scale: float
) -> tuple[Tensor | None, Tensor | None]:
    """Per-step class logits of each branch, (S, N, K_cls) or None for a switched-off branch.

    `spatial_text` and `temporal_text` are the branches' side information (R, K_cls, Q, D).
    """
    spatial = (
        branch_logits(output.spatial, spatial_text, logit_scale)
        if output.spatial is not None
        else None
    )
    temporal = (
        branch_logits(output.temporal, temporal_text, logit_scale)
        if output.temporal is not None
        else None
    )
    return spatial, temporal


def neuron_loss(
    spatial_logits: Tensor | None, temporal_logits: Tensor | None, labels: Tensor, cfg: ModelConfig
) -> Tensor:
    """w_s Σ_i w_i CE(spatial step i) + w_t Σ_i w_i CE(temporal step i).

    Logits are (S, N, K_cls), labels (N,). With a single branch only its term counts, weight 1.
    """

    def steps_loss(logits: Tensor | None, branch: str) -> Tensor:
        if logits is None or logits.dim() != 3 or logits.shape[0] != cfg.steps:
            shape = None if logits is None else tuple(logits.shape)
            raise ValueError(
                f"{branch} logits have shape {shape}: model.branches={cfg.branches!r} and "
                f"model.steps={cfg.steps} need (S={cfg.steps}, N, classes)"
            )
        total = logits.new_zeros(())  # 0 + x == x exactly: the same sum as Python's sum()
        for step, weight in enumerate(cfg.step_loss_weights):
            total = total + weight * F.cross_entropy(logits[step], labels)
        return total

    if cfg.branches == "spatial":
        return steps_loss(spatial_logits, "spatial")
    if cfg.branches == "temporal":
        return steps_loss(temporal_logits, "temporal")
    spatial_weight, temporal_weight = cfg.branch_loss_weights
    return spatial_weight * steps_loss(spatial_logits, "spatial") + temporal_weight * steps_loss(
        temporal_logits, "temporal"
    )


def head_flops(
    model_cfg: ModelConfig,
    feature_channels: int,
    text_dim: int,
    num_joints: int,
    feature_frames: int,
    num_classes: int,
    descriptions_per_class: int,
) -> float:
    """Forward FLOPs per sample of the head and its class logits (2 × multiply-adds).

    Counts the affinities, the attention pooling, the MLPs, the projections and the cosines with
    every description; softmaxes, masks, normalisation and biases are not counted. Backward costs
    about twice the forward.
    """
    channels, hidden = feature_channels, model_cfg.hidden
    mlp = channels * hidden + hidden * channels
    logits = num_classes * descriptions_per_class * text_dim
    total = 0.0
    if model_cfg.branches in ("both", "spatial"):
        prototypes = model_cfg.spatial_prototypes
        step = (
            2 * num_joints * prototypes * channels + prototypes * mlp + channels * text_dim + logits
        )
        total += model_cfg.steps * step
    if model_cfg.branches in ("both", "temporal"):
        prototypes = model_cfg.temporal_prototypes
        mlps = 3 if model_cfg.memory == "gated" else 1
        if max(model_cfg.temporal_windows) > feature_frames:
            raise ValueError(
                f"model.temporal_windows={list(model_cfg.temporal_windows)}: the feature map has "
                f"{feature_frames} frames; use windows <= {feature_frames}"
            )
        for window in model_cfg.temporal_windows:
            total += (
                2 * window * prototypes * channels
                + mlps * prototypes * mlp
                + channels * text_dim
                + logits
            )
    return 2.0 * total


# --------------------------------------------------------------------------------------------
# The full model


class NeuronModel(nn.Module):
    """Frozen Shift-GCN encoder + Neuron head: skeletons (N, C, T, V, M) → HeadOutput.

    The encoder's parameters never require gradients and it stays in eval mode even after
    `.train()` (see deviation 4 in the module docstring).
    """

    def __init__(self, encoder: ShiftGCN, head: NeuronHead) -> None:
        super().__init__()
        if (
            encoder.feature_channels != head.feature_channels
            or encoder.num_joints != head.num_joints
        ):
            raise ValueError(
                f"encoder gives {encoder.feature_channels} channels on {encoder.num_joints} joints but "
                f"the head expects {head.feature_channels} channels on {head.num_joints} joints; "
                "build the head with the encoder's model.encoder.channels[-1] and joint count"
            )
        self.encoder = encoder.requires_grad_(False).eval()
        self.head = head

    def train(self, mode: bool = True) -> NeuronModel:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, x: Tensor) -> HeadOutput:
        with torch.no_grad():
            feature_map = self.encoder.features(x)  # (N, C, T', V)
        joint_features, frame_features = pool_features(feature_map)  # (N, C, V), (N, C, T')
        return self.head(joint_features, frame_features)
