"""CUDA benchmark: the reference-style stage 2 against the cache path in bf16, and trials per
GPU-hour with several trials sharing the GPU.

From a fresh clone on a CUDA machine (setup keeps an installed CUDA torch):

    bash scripts/setup.sh && .venv/bin/python bench/gpu.py
    .venv/bin/python bench/gpu.py --batch-size 64 --large-batch 1024 --trials 4
    .venv/bin/python bench/gpu.py --device cpu --dry-run      # the logic only, tiny sizes, CPU

Reference-style: fp32, every batch through the frozen Shift-GCN, augmentation on the host.
Cache path: features preloaded on the GPU, bf16 autocast. Reports samples/s per epoch, the ratio
(target >= 20x), the head's achieved TFLOP/s against the GPU's bf16 dense peak (target >= 30 %),
and trials per GPU-hour: `--trials` complete stage-2 runs (`fit` on the cache path, the search's
trainable) run at once in separate processes sharing the device, against one alone. Prints JSON,
then a Markdown table. Without a CUDA device it exits with a message unless `--device cpu`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from neuron.config import Config, load_config
from neuron.extract import FeatureSource
from neuron.model import head_flops
from neuron.prepare import Prepared, load_side_information_file, prepare
from neuron.train import build_head, fit, train_one_epoch

BF16_DENSE_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def peak_tflops(name: str) -> float | None:
    return next((value for key, value in BF16_DENSE_PEAK_TFLOPS.items() if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_epochs(
    cfg: Config,
    prepared: Prepared,
    text: tuple[torch.Tensor, torch.Tensor],
    text_dim: int,
    device: torch.device,
    epochs: int = 2,
) -> float:
    """Seconds per stage-2 training epoch (after a warm-up epoch)."""
    source = FeatureSource(cfg, prepared, device)
    head = build_head(cfg, source.table, text_dim).to(device)
    optimizer = torch.optim.SGD(
        head.parameters(), lr=cfg.train.optimizer.lr, momentum=0.9, nesterov=True
    )
    train_one_epoch(
        cfg, head, source, text, prepared.class_split.training, optimizer, epoch=1
    )  # warm-up
    synchronize(device)
    started = time.perf_counter()
    for epoch in range(2, 2 + epochs):
        train_one_epoch(
            cfg, head, source, text, prepared.class_split.training, optimizer, epoch=epoch
        )
    synchronize(device)
    return (time.perf_counter() - started) / epochs


def one_trial(plain: dict, prepared: Prepared) -> float:
    """One complete stage-2 run (what a search trial runs), in its own process; its seconds."""
    from neuron.config import config_from_plain

    cfg = config_from_plain(plain)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-trial-") as run_dir:
        fit(cfg, None, run_dir=run_dir, prepared=prepared)
    return time.perf_counter() - started


def concurrent_trials(cfg: Config, prepared: Prepared, trials: int) -> float:
    """Wall seconds for `trials` stage-2 runs at once, each in a fresh (spawned) process."""
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=trials, mp_context=context) as pool:
        list(pool.map(one_trial, [cfg.to_dict()] * trials, [prepared] * trials))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--large-batch", type=int, default=1024)
    parser.add_argument("--preset", default="default", choices=["tiny", "small", "default"])
    parser.add_argument(
        "--trials", type=int, default=4, help="stage-2 runs sharing the device at once"
    )
    parser.add_argument("--trial-epochs", type=int, default=10, help="stage-2 epochs per trial")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="the tiny config, tiny dataset and one-epoch trials: checks the script, not speed",
    )
    args = parser.parse_args()
    for name in ("batch_size", "large_batch", "trials", "trial_epochs"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench/gpu.py needs a CUDA device and none is visible; use --device cpu --dry-run to "
            "check the script on a CPU",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as cache_dir:
        report = measure(args, device, cache_dir)
    print(json.dumps(report, indent=2))
    print("\n| quantity | value |\n|---|---|")
    for key, value in report.items():
        print(f"| {key} | {value} |")
    return 0


def measure(args: argparse.Namespace, device: torch.device, cache_dir: str) -> dict[str, Any]:
    """Every figure of the report, with the dataset, encoder and feature cache under
    `cache_dir` (removed afterwards)."""
    overrides = {
        "data.synthetic.preset": "tiny" if args.dry_run else args.preset,
        "run.cache_dir": cache_dir,
        "run.device": str(device),
        "pretrain.epochs": 1,
        "train.epochs": 1,
        "pretrain.optimizer.lr_milestones": [],  # one epoch: no schedule
        "train.optimizer.lr_milestones": [],
        "train.augmented_views": 1,
        "train.batch_size": args.batch_size,
    }
    cfg = load_config("tiny" if args.dry_run else None, overrides)
    prepared = prepare(cfg, progress=not args.dry_run)
    side = load_side_information_file(prepared.side_information_path)
    text = (side.spatial.to(device), side.temporal.to(device))
    reference = cfg.replace({"train.path": "encoder", "run.bf16": False})
    cached = cfg.replace({"train.path": "cache", "run.bf16": device.type == "cuda"})
    cached_large = cached.replace({"train.batch_size": args.large_batch})
    samples = len(FeatureSource(cached, prepared, device).table.select("train", view=0))
    reference_seconds = timed_epochs(reference, prepared, text, side.dim, device)
    cached_seconds = timed_epochs(cached, prepared, text, side.dim, device)
    large_seconds = timed_epochs(cached_large, prepared, text, side.dim, device, epochs=5)
    frames = cfg.model.encoder.feature_frames(cfg.data.window)
    head_train_flops = 3.0 * head_flops(
        cfg.model, cfg.model.encoder.feature_channels, side.dim, 25, frames,
        len(prepared.class_split.training), side.spatial.shape[2],
    )  # fmt: skip
    trial_cfg = cached.replace({"train.epochs": 1 if args.dry_run else args.trial_epochs})
    alone_seconds = concurrent_trials(trial_cfg, prepared, 1)
    shared_seconds = concurrent_trials(trial_cfg, prepared, args.trials)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_tflops(name)
    achieved = head_train_flops * samples / large_seconds / 1e12
    report = {
        "device": name,
        "dry_run": args.dry_run,
        "train_samples": samples,
        "reference_fp32_encoder_samples_per_s": round(samples / reference_seconds, 1),
        "reference_fp32_encoder_epoch_seconds": round(reference_seconds, 3),
        "cache_bf16_samples_per_s": round(samples / cached_seconds, 1),
        "cache_bf16_epoch_seconds": round(cached_seconds, 3),
        f"cache_bf16_batch{args.large_batch}_samples_per_s": round(samples / large_seconds, 1),
        "epoch_ratio_reference_over_cache": round(reference_seconds / cached_seconds, 1),
        "head_tflops_achieved": round(achieved, 4),
        "bf16_peak_tflops": peak,
        "head_fraction_of_peak": None if peak is None else round(achieved / peak, 4),
        "trial_epochs": trial_cfg.train.epochs,
        "trials_per_gpu_hour_alone": round(3600.0 / alone_seconds, 1),
        f"trials_per_gpu_hour_{args.trials}_sharing": round(
            3600.0 * args.trials / shared_seconds, 1
        ),
    }
    return report


if __name__ == "__main__":
    sys.exit(main())
