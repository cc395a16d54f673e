"""The rounds of side information, as Neuron aligns them with its evolution steps.

Step i of the spatial branch aligns with spatial round i (coarse → medium → fine body-part
descriptions); step i of the temporal branch with temporal round i (first, second, third phase
of the action). The names are the file stems of the description JSON files every source of
descriptions uses (neuron.sideinfo reads them; neuron.synthetic writes them).
"""

from __future__ import annotations

SPATIAL_ROUNDS: tuple[str, ...] = ("spatial_cg", "spatial_mg", "spatial_fg")
"""Spatial rounds, coarse → medium → fine (file stems of the description JSON files)."""
TEMPORAL_ROUNDS: tuple[str, ...] = ("temporal_fp", "temporal_sp", "temporal_tp")
"""Temporal rounds: first, second, third phase (file stems)."""
DESCRIPTION_ROUNDS: tuple[str, ...] = SPATIAL_ROUNDS + TEMPORAL_ROUNDS
"""Every round, spatial first."""
