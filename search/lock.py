"""One writer per search (or ablation study) name.

Two drivers with the same name would share one Optuna study, one MLflow parent run and one
checkpoint folder, and each would count the other's trials. `hold_name` takes an exclusive lock
on `<folder>/.lock` for the driver's whole life; a second driver is refused at once. The lock is
the kernel's (neuron.cache.file_lock): a driver that dies, even by SIGKILL, releases it, so
`--resume` after a crash never finds the name held.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from neuron.cache import LockHeld, file_lock

LOCK_NAME = ".lock"


class NameInUseError(ValueError):
    """Another live process is running the search or study of that name."""


@contextlib.contextmanager
def hold_name(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder`'s lock while the block runs; `NameInUseError` at once if another process
    holds it. `what` names the thing in the message, e.g. "search 'lr-sweep'". An empty
    `folder` created here is removed again on the way out."""
    created = not folder.exists()
    path = folder / LOCK_NAME
    try:
        with file_lock(path, wait=False):
            (folder / ".owner").write_text(f"{os.getpid()}\n")
            try:
                yield
            finally:
                (folder / ".owner").unlink(missing_ok=True)
    except LockHeld:
        owner = _owner(folder)
        raise NameInUseError(
            f"{what} is already running{owner} (it holds {path}); wait for it to end, or choose "
            "another --name. A process that dies releases the name, so a crashed run can be "
            "continued with --resume"
        ) from None
    finally:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: the name was never used


def _owner(folder: Path) -> str:
    try:
        pid = (folder / ".owner").read_text().strip()
    except OSError:
        return ""
    return f" in process {pid}" if pid.isdigit() else ""
