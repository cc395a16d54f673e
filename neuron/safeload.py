"""Reading torch files without running code: checkpoints, caches and encoders are data.

`torch.load(weights_only=True)` refuses any pickled object other than tensors, plain containers
(dict, list, tuple, OrderedDict, Counter), numbers, strings and booleans, so a crafted file
cannot execute code while it is read. Everything this project saves holds only those.
`load_torch_file` turns every way a file can fail to load (refused object, truncated or corrupt
archive, not a torch file at all) into one `UnreadableFileError` naming the file, the cause and
the fix.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from neuron.atomic import atomic_path


class UnreadableFileError(ValueError):
    """A file could not be read as what it should be; the message names it, the cause and the fix."""


def _first_line(error: BaseException) -> str:
    """`Type: first sentence` of an error, at most 120 characters."""
    lines = str(error).strip().splitlines()
    text = lines[0].split(". ")[0] if lines else ""
    return f"{type(error).__name__}: {text}"[:120] if text else type(error).__name__


def load_torch_file(path: str | Path, what: str, fix: str, map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; any failure becomes an `UnreadableFileError`
    "PATH: not a readable WHAT (cause); FIX"."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Files pickled with another protocol warn; the answer below says all that matters.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refused a global (a class or function the file wants to call), or the
        # pickle stream itself is damaged.
        text = str(error)
        if "Unsupported global" in text or "GLOBAL" in text or "REDUCE" in text:
            cause = (
                "it holds Python objects other than tensors, numbers, strings and containers; "
                "loading it could run code, so it was refused"
            )
        else:
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            cause = "truncated or corrupt: " + (
                detail.group(1).strip().splitlines()[0] if detail else _first_line(error)
            )
        raise UnreadableFileError(f"{path}: not a readable {what} ({cause}); {fix}") from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as error:
        # Truncated or foreign files surface as RuntimeError ("PytorchStreamReader failed ..."),
        # EOFError or zip errors, depending on where the damage is.
        raise UnreadableFileError(
            f"{path}: not a readable {what} (truncated or corrupt: {_first_line(error)}); {fix}"
        ) from error


def save_torch_file(value: Any, target: str | Path) -> Path:
    """`torch.save(value)` to `target` atomically. Serialised in memory first and written by
    Python, so a full disk or a read-only file system raises the OSError naming `target` (torch's
    own file writer reports them as an opaque RuntimeError), and `target` is either the old file
    or the whole new one. Save only what `load_torch_file` reads back: tensors, plain
    containers, numbers, strings."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    with atomic_path(target) as temporary:
        temporary.write_bytes(buffer.getbuffer())
    return Path(target)
