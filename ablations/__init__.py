"""Declarative ablation studies on top of search/ (planned; see the README's roadmap)."""

from __future__ import annotations
