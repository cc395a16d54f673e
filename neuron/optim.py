"""The optimiser both training stages use: SGD with Nesterov momentum and a step schedule, and
the error raised when a loss stops being finite."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def sgd(
    parameters: Iterable[Any], *, lr: float, momentum: float, weight_decay: float = 0.0
) -> torch.optim.SGD:
    """Nesterov SGD over parameters or parameter groups (groups may set their own decay)."""
    return torch.optim.SGD(
        parameters, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay
    )


def step_schedule(
    optimizer: torch.optim.Optimizer, milestones: Sequence[int], decay: float
) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply the learning rate by `decay` after each epoch listed in `milestones`."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=decay)
