"""Distributed hyperparameter search over Neuron: Ray Tune schedules, Optuna proposes, MLflow records."""

from __future__ import annotations
