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
import os
import sys
import time
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


LOCK_NOTICE_SECONDS = 30.0
"""How often a process waiting on a lock says what it waits for."""
LOCK_POLL_SECONDS = 0.25


class LockHeld(RuntimeError):
    """`file_lock(..., wait=False)` found the lock held by another process."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is locked by another process")
        self.path = path


@contextlib.contextmanager
def file_lock(path: Path, waiting_for: str = "", wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on `path` across processes on a node (and NFS with locks).

    The lock is the kernel's (flock): a holder that dies, even by SIGKILL, releases it. The
    file exists only while the lock is held or awaited: the holder deletes it on release, and
    a waiter that wakes up holding a deleted file locks the new one instead. A waiter prints
    what it waits for (`waiting_for`) at once and every LOCK_NOTICE_SECONDS. With `wait=False`
    a held lock raises `LockHeld` at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    notice_at = started
    while True:
        handle = open(path, "a")  # noqa: SIM115 (held for the lock's whole life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            if not wait:
                raise LockHeld(path) from None
            if time.monotonic() >= notice_at:
                waited = time.monotonic() - started
                print(
                    f"waiting ({waited:.0f} s so far) for another process, which holds {path}: "
                    f"{waiting_for or 'a lock'}",
                    file=sys.stderr,
                    flush=True,
                )
                notice_at += LOCK_NOTICE_SECONDS
            time.sleep(LOCK_POLL_SECONDS)
            continue
        try:
            locked_current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            locked_current = False
        if locked_current:
            break
        handle.close()  # the previous holder deleted this file on release: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


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
    with file_lock(lock, waiting_for=message):
        if not target.is_file():
            log_progress(progress, message)
            build()
