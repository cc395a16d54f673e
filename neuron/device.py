"""Device placement: which torch device a run uses, and whether stage 2's feature cache is
copied whole onto the GPU."""

from __future__ import annotations

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
