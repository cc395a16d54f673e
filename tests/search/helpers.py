"""Helpers of the search tests: specs under a temporary folder, process hygiene."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from search.spec import SearchSpec, load_search_spec

SPECS = Path(__file__).resolve().parents[2] / "search" / "specs"


def tiny_spec(tmp_path: Path, store: str, cache: Path, *overrides: str) -> SearchSpec:
    """search/specs/tiny.yaml writing everything under tmp_path."""
    return load_search_spec(
        SPECS / "tiny.yaml",
        [
            f"output_dir={tmp_path / 'out'}",
            f"tracking_uri={store}",
            f"base.overrides.run.cache_dir={cache}",
            *overrides,
        ],
    )


def descendants(pid: int) -> list[int]:
    """All live descendant process ids of `pid` (from /proc; no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def end_processes(pids: list[int]) -> None:
    """SIGKILL the processes still alive among `pids` (ours: recorded before their parent died)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
