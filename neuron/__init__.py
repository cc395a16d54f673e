"""Neuron: context-aware evolving representations for zero-shot skeleton action recognition.

The science core: Arrow datasets and importers, splits, side information, the model, two-stage
training, feature cache and evaluation. It never imports ray or mlflow.
"""

from __future__ import annotations

__version__ = "0.1.0"
