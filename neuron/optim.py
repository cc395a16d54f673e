"""The optimiser both training stages use: SGD with Nesterov momentum and a step schedule
(`OptimizerConfig`), and the error raised when a loss stops being finite."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from neuron.config import OptimizerConfig


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def sgd(parameters: Iterable[Any], settings: OptimizerConfig) -> torch.optim.SGD:
    """Nesterov SGD over parameters, or over parameter groups that carry their own
    `weight_decay` (then `settings.weight_decay` applies only to groups without one)."""
    return torch.optim.SGD(
        parameters,
        lr=settings.lr,
        momentum=settings.momentum,
        nesterov=True,
        weight_decay=settings.weight_decay,
    )


def step_schedule(
    optimizer: torch.optim.Optimizer, settings: OptimizerConfig
) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply the learning rate by `lr_decay` after each epoch in `lr_milestones`."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(settings.lr_milestones), gamma=settings.lr_decay
    )
