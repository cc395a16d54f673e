"""Device placement: which torch device a run uses, whether stage 2's feature cache is copied
whole onto the GPU, and how the host allocator treats training's large activations."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
from collections.abc import Iterator, Mapping

import torch


def resolve_device(device: str) -> torch.device:
    """`run.device` (auto, cpu, cuda) as a torch device; `cuda` without a visible GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device=cuda: no CUDA device is visible; use run.device=cpu or auto")
    return torch.device(device)


def apply_threads(threads: int) -> None:
    """`run.threads`: torch's intra-op threads (0 leaves torch's default). Applied before each
    stage, because the thread count changes how float sums are split, hence the last bits."""
    if threads > 0:
        torch.set_num_threads(threads)


DEVICE_CACHE_SHARE = 0.25
"""`run.cache_on_device: auto` copies the feature cache to the GPU when it takes at most this
share of the run's part of the GPU memory (the rest is the head, its activations and the
framework's own allocations)."""


def cache_fits_on_device(
    mode: str, cache_bytes: int, device_bytes: int, gpu_fraction: float
) -> bool:
    """Whether stage 2 copies the whole feature cache to the GPU (`run.cache_on_device`)."""
    if mode != "auto":
        return mode == "always"
    return cache_bytes <= DEVICE_CACHE_SHARE * device_bytes * gpu_fraction


# --------------------------------------------------------------------------------------------
# Host memory: keep freed activations for reuse during training
#
# glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mmap and
# unmaps it on free. A training step at reference sizes allocates and frees dozens of ~50 MB
# activations, so every step page-faults (and the kernel zeroes) gigabytes anew: on 2 CPU cores
# that made the encoder's step about 3x slower, with more system time than user time. Keeping
# freed memory in the heap (no mmap for large blocks, no trimming) makes the next step reuse it.

KEEP_HOST_MEMORY_VARIABLE = "NEURON_KEEP_HOST_MEMORY"
"""Set to 0 to leave the C allocator's defaults alone (for example to compare, or when another
allocator such as jemalloc is preloaded)."""

HOST_ALLOCATOR_TUNABLES = (
    ("glibc.malloc.mmap_max", "0"),  # large blocks come from the heap, which keeps them
    ("glibc.malloc.trim_threshold", str(2**46)),  # never shrink the heap on free
    ("glibc.malloc.arena_max", "1"),  # worker threads (a Tune trial's) share that heap
)
"""glibc tunables for processes started to train (Ray workers): the settings `keep_host_memory`
applies in a running process, plus one arena for every thread, which only works at start-up."""

_M_TRIM_THRESHOLD = -1  # <malloc.h> mallopt parameters and glibc's defaults
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_kept_depth = 0
_kept_lock = threading.Lock()


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc and keeping host memory is not switched off."""
    if os.environ.get(KEEP_HOST_MEMORY_VARIABLE, "1") == "0":
        return None
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def host_allocator_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Environment variables for processes that train (Ray workers): `GLIBC_TUNABLES` with
    `HOST_ALLOCATOR_TUNABLES` added to whatever `environ` already sets (its own values win).
    Empty where the C library is not glibc or `NEURON_KEEP_HOST_MEMORY=0`."""
    if _glibc() is None:
        return {}
    existing = [item for item in environ.get("GLIBC_TUNABLES", "").split(":") if item]
    names = {item.split("=", 1)[0] for item in existing}
    added = [f"{name}={value}" for name, value in HOST_ALLOCATOR_TUNABLES if name not in names]
    return {"GLIBC_TUNABLES": ":".join(existing + added)}


@contextlib.contextmanager
def keep_host_memory() -> Iterator[None]:
    """While training runs, freed memory stays in the process for the next step; when the
    outermost block ends, glibc's defaults return and free memory goes back to the system
    (`malloc_trim`), so a driver does not hold a stage's peak while trials run.

    A no-op where the C library is not glibc or `NEURON_KEEP_HOST_MEMORY=0`. The setting is
    process-wide; blocks may nest and run in several threads.
    """
    global _kept_depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _kept_lock:
        if _kept_depth == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, -1)  # -1: never trim (mallopt(3))
        _kept_depth += 1
    try:
        yield
    finally:
        with _kept_lock:
            _kept_depth -= 1
            if _kept_depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
