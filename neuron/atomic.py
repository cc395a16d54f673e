"""Atomic file writes: write next to the target, then rename. Nothing is ever half-written."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only on success.

    The temporary name starts with `.` and ends in `.partial`, so an interrupted write never
    leaves a file that looks complete. Works for files and directories; a directory is only
    ever replaced by a directory (a file aimed at one raises IsADirectoryError). An OS error while
    writing (full disk, read-only file system) names `target`, not the temporary path.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=f"{suffix}.partial", dir=target.parent
        )
    except OSError as error:
        raise _naming(error, target) from error
    os.close(handle)
    temporary = Path(name)
    temporary.unlink()
    try:
        yield temporary
        if target.is_dir() and not target.is_symlink():
            if not temporary.is_dir():
                # A file never replaces a folder: `--metrics-out runs` must not delete runs/.
                raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(target))
            shutil.rmtree(target)  # a folder written whole replaces its previous version
        os.replace(temporary, target)
    except BaseException as error:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and str(error.filename or temporary).startswith(
            str(temporary)
        ):
            raise _naming(error, target) from error
        raise


def _naming(error: OSError, target: Path) -> OSError:
    """The same OS error, naming `target` (the file the user asked for)."""
    if error.filename is not None and not str(error.filename).startswith(
        str(target.parent / f".{target.name}.")
    ):
        return error
    return type(error)(error.errno, error.strerror or str(error), str(target))


def write_text_atomic(target: str | Path, text: str) -> Path:
    with atomic_path(target) as temporary:
        temporary.write_text(text)
    return Path(target)


def write_bytes_atomic(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)
    return Path(target)
