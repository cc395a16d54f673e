"""Neuron head: shapes for every switch, compression, memory, logits, loss, gradients, frozen encoder."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import neuron.model as model_module
from neuron.config import EncoderConfig, ModelConfig
from neuron.encoder import ShiftGCN, pool_features
from neuron.model import (
    DROPPED_WEIGHT,
    HeadOutput,
    MemoryUpdate,
    NeuronHead,
    NeuronModel,
    class_logits,
    head_flops,
    joint_attention,
    neuron_loss,
    select_rounds,
)

ENCODER = EncoderConfig(channels=(8, 8, 16), stride_units=(1,))
WINDOW = 16
FRAMES = ENCODER.feature_frames(WINDOW)  # 8
CHANNELS = ENCODER.feature_channels  # 16
JOINTS = 25
TEXT_DIM = 12
CLASSES = 5
DESCRIPTIONS = 3
ROUNDS = 3
WINDOWS = {1: (8,), 2: (5, 8), 3: (3, 5, 8)}


def tiny_config(steps: int = 3, **overrides: Any) -> ModelConfig:
    values: dict[str, Any] = {
        "encoder": ENCODER,
        "steps": steps,
        "spatial_prototypes": 6,
        "temporal_prototypes": 6,
        "compression_per_step": 1,
        "temporal_windows": WINDOWS[steps],
        "hidden": 16,
        "step_loss_weights": (1 / steps,) * steps,
    }
    values.update(overrides)
    return ModelConfig(**values)


def tiny_head(cfg: ModelConfig, seed: int = 0) -> NeuronHead:
    torch.manual_seed(seed)
    return NeuronHead(cfg, CHANNELS, TEXT_DIM, JOINTS, FRAMES)


def features(batch: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    feature_map = torch.rand(batch, CHANNELS, FRAMES, JOINTS, generator=generator)
    return pool_features(feature_map)


def side_information(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (ROUNDS, CLASSES, DESCRIPTIONS, TEXT_DIM)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


SWITCHES = list(
    itertools.product(
        ("both", "spatial", "temporal"),
        ("gated", "replace"),
        (True, False),
        (1, 2, 3),
        ("relu_sigmoid", "sigmoid"),
    )
)


@pytest.mark.parametrize(("branches", "memory", "compression", "steps", "gate"), SWITCHES)
def test_shapes_for_every_switch(
    branches: str, memory: str, compression: bool, steps: int, gate: str
) -> None:
    cfg = tiny_config(steps, branches=branches, memory=memory, compression=compression, gate=gate)
    head = tiny_head(cfg)
    output = head(*features())
    spatial_text, temporal_text = side_information()
    spatial_logits, temporal_logits = class_logits(
        output, spatial_text, temporal_text, cfg.logit_scale
    )
    for branch, embeddings, logits in (
        ("spatial", output.spatial, spatial_logits),
        ("temporal", output.temporal, temporal_logits),
    ):
        if branches in ("both", branch):
            assert embeddings is not None and logits is not None
            assert embeddings.shape == (steps, 4, TEXT_DIM)
            norms = embeddings.norm(dim=-1)
            assert torch.all(((norms - 1).abs() < 1e-5) | (norms == 0))
            assert logits.shape == (steps, 4, CLASSES)
        else:
            assert embeddings is None and logits is None
    loss = neuron_loss(spatial_logits, temporal_logits, torch.tensor([0, 1, 2, 3]), cfg)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_rejects_windows_longer_than_the_feature_map() -> None:
    with pytest.raises(ValueError, match=r"model.temporal_windows=\[3, 5, 9\]"):
        NeuronHead(tiny_config(temporal_windows=(3, 5, 9)), CHANNELS, TEXT_DIM, JOINTS, FRAMES)


# --------------------------------------------------------------------------------------------
# Spatial compression


def test_compression_switches_off_each_joints_lowest_prototypes() -> None:
    # Identity prototypes make the affinity A[v, k] equal to the feature F_s[k, v].
    affinities = torch.tensor(
        [
            [4.0, 1.0, 3.0, 2.0],  # joint 0: lowest k=1, then k=3
            [1.0, 2.0, 3.0, 4.0],  # joint 1: lowest k=0, then k=1
            [2.0, 4.0, 1.0, 3.0],  # joint 2: lowest k=2, then k=0
        ]
    )
    joint_features = affinities.T.unsqueeze(0)  # (1, C=4, V=3)
    prototypes = torch.eye(4).unsqueeze(0)  # (1, K=4, C=4)
    softmax_over_joints = F.softmax(affinities, dim=0)
    head = tiny_head(tiny_config(steps=2, compression_per_step=1, spatial_prototypes=4))
    expected_off = {
        1: {(0, 1), (1, 0), (2, 2)},
        2: {(0, 1), (0, 3), (1, 0), (1, 1), (2, 2), (2, 0)},
    }
    for step, off in expected_off.items():
        assert head.spatial is not None
        weights = joint_attention(joint_features, prototypes, head.spatial.dropped(step))[
            0
        ]  # (V, K)
        for joint, prototype in itertools.product(range(3), range(4)):
            factor = DROPPED_WEIGHT if (joint, prototype) in off else 1.0
            assert weights[joint, prototype] == softmax_over_joints[joint, prototype] * factor


def test_spatial_steps_drop_compression_per_step_times_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def spy(joint_features: torch.Tensor, prototypes: torch.Tensor, dropped: int) -> torch.Tensor:
        weights = joint_attention(joint_features, prototypes, dropped)
        affinity = torch.einsum("ncv,nkc->nvk", joint_features, prototypes)
        recorded.append((dropped, weights.detach(), affinity.detach()))
        return weights

    monkeypatch.setattr(model_module, "joint_attention", spy)
    head = tiny_head(tiny_config(steps=3, compression_per_step=1))
    head(*features())
    assert [dropped for dropped, _, _ in recorded] == [1, 2, 3]
    for dropped, weights, affinity in recorded:
        switched_off = weights < 1e-9  # (N, V, K)
        assert (switched_off.sum(-1) == dropped).all()
        lowest = affinity.topk(dropped, dim=-1, largest=False).indices
        assert switched_off.gather(-1, lowest).all()


def test_no_compression_masks_nothing() -> None:
    joint_features, _ = features()
    prototypes = torch.randn(4, 6, CHANNELS)
    weights = joint_attention(joint_features, prototypes, dropped=0)
    affinity = torch.einsum("ncv,nkc->nvk", joint_features, prototypes)
    torch.testing.assert_close(weights, F.softmax(affinity, dim=1))


# --------------------------------------------------------------------------------------------
# Temporal memory


def set_mlp(mlp: Any, second_scale: float) -> None:
    """First layer identity, second layer `second_scale` · identity, zero biases."""
    with torch.no_grad():
        mlp[0].weight.copy_(torch.eye(2))
        mlp[2].weight.copy_(second_scale * torch.eye(2))
        mlp[0].bias.zero_()
        mlp[2].bias.zero_()


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


@pytest.mark.parametrize(
    ("memory", "gate", "expected"),
    [
        # recall MLP → relu(2·relu(U)) = [2, 0]; memory MLP → relu(-relu(U)) = [0, 0]; update → [3, 0]
        ("gated", "relu_sigmoid", [sigmoid(2) * 0.3 + 0.5 * 3, 0.5 * 0.7 + 0.5 * 0]),
        # without the final ReLU: memory MLP → -relu(U) = [-1, 0]
        ("gated", "sigmoid", [sigmoid(2) * 0.3 + sigmoid(-1) * 3, 0.5 * 0.7 + 0.5 * 0]),
        ("replace", "relu_sigmoid", [3.0, 0.0]),
    ],
)
def test_memory_update_equals_its_equation(memory: str, gate: str, expected: list[float]) -> None:
    step = MemoryUpdate(channels=2, hidden=2, memory=memory, gate=gate)
    set_mlp(step.update, 3.0)
    if memory == "gated":
        set_mlp(step.recall, 2.0)
        set_mlp(step.remember, -1.0)
    pooled = torch.tensor([[[1.0, -2.0]]])  # U (N=1, K=1, C=2); relu(U) = [1, 0]
    previous = torch.tensor([[[0.3, 0.7]]])  # Q^{i-1}
    torch.testing.assert_close(step(pooled, previous), torch.tensor([[expected]]))


def test_temporal_steps_read_growing_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    lengths: list[int] = []
    original = model_module.frame_attention

    def spy(frame_features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        lengths.append(frame_features.shape[-1])
        return original(frame_features, prototypes)

    monkeypatch.setattr(model_module, "frame_attention", spy)
    tiny_head(tiny_config(steps=3, branches="temporal"))(*features())
    assert lengths == [3, 5, 8]


# --------------------------------------------------------------------------------------------
# Side information, logits, loss


def test_select_rounds_takes_the_last_rounds() -> None:
    text = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 2, 4)
    assert select_rounds(text, 1)[:, 0, 0, 0].tolist() == [2.0]
    assert select_rounds(text, 2)[:, 0, 0, 0].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="model.steps=3"):
        select_rounds(text[:2], 3)


def test_logits_are_scaled_mean_cosines() -> None:
    generator = torch.Generator().manual_seed(0)
    steps, batch = 2, 3
    spatial = F.normalize(torch.randn(steps, batch, TEXT_DIM, generator=generator), dim=-1)
    temporal = F.normalize(torch.randn(steps, batch, TEXT_DIM, generator=generator), dim=-1)
    spatial_text, temporal_text = side_information()
    spatial_logits, temporal_logits = class_logits(
        HeadOutput(spatial, temporal), spatial_text, temporal_text, 0.25
    )
    for embeddings, text, logits in (
        (spatial, spatial_text, spatial_logits),
        (temporal, temporal_text, temporal_logits),
    ):
        assert logits is not None
        for step, sample, label in itertools.product(range(steps), range(batch), range(CLASSES)):
            round_index = ROUNDS - steps + step
            cosines = [
                F.cosine_similarity(embeddings[step, sample], text[round_index, label, q], dim=0)
                for q in range(DESCRIPTIONS)
            ]
            torch.testing.assert_close(
                logits[step, sample, label], 0.25 * torch.stack(cosines).mean()
            )


def test_loss_weights() -> None:
    generator = torch.Generator().manual_seed(0)
    spatial = torch.randn(3, 4, CLASSES, generator=generator)
    temporal = torch.randn(3, 4, CLASSES, generator=generator)
    labels = torch.tensor([0, 4, 2, 1])

    def cross_entropy(logits: torch.Tensor, step: int) -> torch.Tensor:
        return F.cross_entropy(logits[step], labels)

    reference = neuron_loss(spatial, temporal, labels, tiny_config())
    expected = 0.5 * (
        sum(cross_entropy(spatial, i) for i in range(3)) / 3
        + sum(cross_entropy(temporal, i) for i in range(3)) / 3
    )
    torch.testing.assert_close(reference, expected)

    weighted = tiny_config(branch_loss_weights=(0.2, 0.8), step_loss_weights=(0.125, 0.25, 0.5))
    step_weights = (0.125, 0.25, 0.5)
    expected = 0.2 * sum(
        w * cross_entropy(spatial, i) for i, w in enumerate(step_weights)
    ) + 0.8 * sum(w * cross_entropy(temporal, i) for i, w in enumerate(step_weights))
    torch.testing.assert_close(neuron_loss(spatial, temporal, labels, weighted), expected)

    # A single branch keeps only its term, with weight 1.
    spatial_only = tiny_config(
        branches="spatial", branch_loss_weights=(0.2, 0.8), step_loss_weights=step_weights
    )
    expected = sum(w * cross_entropy(spatial, i) for i, w in enumerate(step_weights))
    torch.testing.assert_close(neuron_loss(spatial, None, labels, spatial_only), expected)
    temporal_only = tiny_config(
        branches="temporal", branch_loss_weights=(0.2, 0.8), step_loss_weights=step_weights
    )
    expected = sum(w * cross_entropy(temporal, i) for i, w in enumerate(step_weights))
    torch.testing.assert_close(neuron_loss(None, temporal, labels, temporal_only), expected)

    with pytest.raises(ValueError, match="temporal logits"):
        neuron_loss(spatial, None, labels, tiny_config())
    with pytest.raises(ValueError, match="model.steps=2"):
        neuron_loss(spatial, temporal, labels, tiny_config(steps=2))


# --------------------------------------------------------------------------------------------
# Gradients, the frozen encoder, determinism, FLOPs


def head_loss(head: NeuronHead, cfg: ModelConfig, batch: int = 8) -> torch.Tensor:
    spatial_text, temporal_text = side_information()
    output = head(*features(batch))
    logits = class_logits(output, spatial_text, temporal_text, cfg.logit_scale)
    labels = torch.arange(batch) % CLASSES
    return neuron_loss(*logits, labels, cfg)


@pytest.mark.parametrize(
    ("memory", "gate"),
    [("gated", "relu_sigmoid"), ("gated", "sigmoid"), ("replace", "relu_sigmoid")],
)
def test_gradients_reach_every_head_parameter(memory: str, gate: str) -> None:
    cfg = tiny_config(memory=memory, gate=gate)
    head = tiny_head(cfg)
    head_loss(head, cfg).backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def tiny_model(cfg: ModelConfig) -> NeuronModel:
    torch.manual_seed(0)
    encoder = ShiftGCN(ENCODER, num_classes=CLASSES, num_joints=JOINTS)
    return NeuronModel(encoder, NeuronHead(cfg, CHANNELS, TEXT_DIM, JOINTS, FRAMES))


def test_neuron_model_keeps_the_encoder_frozen_in_eval_mode() -> None:
    cfg = tiny_config()
    model = tiny_model(cfg)
    model.train()
    assert model.head.training
    assert not any(module.training for module in model.encoder.modules())
    statistics = {k: v.clone() for k, v in model.encoder.state_dict().items() if "running" in k}
    x = torch.randn(4, 3, WINDOW, JOINTS, 2)
    output = model(x)
    spatial_text, temporal_text = side_information()
    logits = class_logits(output, spatial_text, temporal_text, cfg.logit_scale)
    neuron_loss(*logits, torch.tensor([0, 1, 2, 3]), cfg).backward()
    for name, parameter in model.encoder.named_parameters():
        assert not parameter.requires_grad and parameter.grad is None, name
    assert all(p.grad is not None for p in model.head.parameters())
    for key, value in model.encoder.state_dict().items():
        if "running" in key:
            assert torch.equal(value, statistics[key]), key
    # The reference path equals the cache path: the head on pooled eval-mode encoder features.
    with torch.no_grad():
        cached = model.head(*pool_features(model.encoder.features(x)))
    torch.testing.assert_close(output.spatial, cached.spatial)
    torch.testing.assert_close(output.temporal, cached.temporal)


def test_neuron_model_rejects_a_mismatched_head() -> None:
    encoder = ShiftGCN(ENCODER, num_classes=CLASSES, num_joints=JOINTS)
    head = NeuronHead(tiny_config(), 32, TEXT_DIM, JOINTS, FRAMES)
    with pytest.raises(ValueError, match="32 channels"):
        NeuronModel(encoder, head)


def test_same_seed_gives_identical_outputs() -> None:
    cfg = tiny_config()
    first = tiny_head(cfg, seed=5)(*features())
    second = tiny_head(cfg, seed=5)(*features())
    other = tiny_head(cfg, seed=6)(*features())
    assert torch.equal(first.spatial, second.spatial) and torch.equal(
        first.temporal, second.temporal
    )
    assert not torch.equal(first.spatial, other.spatial)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"branches": "spatial"}, {"branches": "temporal", "memory": "replace"}, {"steps": 1}],
)
def test_head_flops_match_the_flop_counter(overrides: dict[str, Any]) -> None:
    overrides = dict(overrides)
    steps = int(overrides.pop("steps", 3))
    cfg = tiny_config(steps, **overrides)
    head = tiny_head(cfg)
    spatial_text, temporal_text = side_information()
    batch = 4
    with FlopCounterMode(display=False) as counter:
        class_logits(head(*features(batch)), spatial_text, temporal_text, cfg.logit_scale)
    expected = head_flops(cfg, CHANNELS, TEXT_DIM, JOINTS, FRAMES, CLASSES, DESCRIPTIONS)
    assert counter.get_total_flops() / batch == expected


def test_reference_head_size() -> None:
    head = NeuronHead(
        ModelConfig(), feature_channels=256, text_dim=768, num_joints=25, feature_frames=16
    )
    assert sum(p.numel() for p in head.parameters()) == 2_014_720
    flops = head_flops(ModelConfig(), 256, 768, 25, 16, num_classes=55, descriptions_per_class=10)
    assert flops == pytest.approx(0.268e9, rel=1e-2)
