"""Declarative ablation studies on top of search/: spec, runner, statistics, report."""

from __future__ import annotations
