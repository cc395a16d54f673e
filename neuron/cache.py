"""Build-once cache entries shared by the trials on a node.

Every expensive artefact (the synthetic dataset, encoded side information, the stage-1 encoder,
the feature cache) lives in `run.cache_dir` under a name derived from a hash of everything it
depends on (`stable_hash`, `file_fingerprint`). `build_once` builds an entry under a file lock,
so concurrent trials build it once and the others wait, then reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from neuron.config import to_plain


def stable_hash(value: Any) -> str:
    """16 hex digits of the SHA-256 of `value` (configs and dataclasses included) as sorted JSON."""
    return hashlib.sha256(
        json.dumps(to_plain(value), sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """Cheap content fingerprint: size plus the first and last MiB."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, path.stat().st_size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise builders of one cache entry across processes on a node (and NFS with locks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log_progress(progress: bool, message: str) -> None:
    """Print a progress line (CLI) or nothing (under Tune, where the trial log is enough)."""
    if progress:
        print(message, flush=True)


def build_once(
    target: Path, lock: Path, build: Callable[[], Any], message: str, progress: bool
) -> None:
    """Build a cache entry unless it exists; the lock makes concurrent trials on a node build it
    once while the others wait and then reuse it."""
    if target.is_file():
        return
    with file_lock(lock):
        if not target.is_file():
            log_progress(progress, message)
            build()
