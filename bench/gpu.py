"""CUDA benchmark: the reference-style stage 2 against the cache path in bf16.

    python bench/gpu.py [--batch-size 64] [--large-batch 1024]

Reference-style: fp32, every batch through the frozen Shift-GCN, augmentation on the host.
Cache path: features preloaded on the GPU, bf16 autocast. Reports samples/s per epoch, the ratio
(target >= 20x) and the head's achieved TFLOP/s against the GPU's bf16 dense peak (target >= 30 %).
Prints JSON, then a Markdown table. Needs a CUDA device; exits with a message otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

from neuron.config import load_config
from neuron.extract import FeatureSource
from neuron.model import head_flops
from neuron.prepare import load_side_information_file, prepare
from neuron.train import build_head, train_one_epoch

BF16_DENSE_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def peak_tflops(name: str) -> float | None:
    return next((value for key, value in BF16_DENSE_PEAK_TFLOPS.items() if key in name), None)


def timed_epochs(cfg, prepared, text, side, epochs: int = 2) -> float:
    device = torch.device("cuda")
    source = FeatureSource(cfg, prepared, device)
    head = build_head(cfg, source.table, side.dim).to(device)
    optimizer = torch.optim.SGD(
        head.parameters(), lr=cfg.train.optimizer.lr, momentum=0.9, nesterov=True
    )
    train_one_epoch(
        cfg, head, source, text, prepared.class_split.training, optimizer, epoch=1
    )  # warm-up
    torch.cuda.synchronize()
    started = time.perf_counter()
    for epoch in range(2, 2 + epochs):
        train_one_epoch(
            cfg, head, source, text, prepared.class_split.training, optimizer, epoch=epoch
        )
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / epochs


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--large-batch", type=int, default=1024)
    parser.add_argument("--preset", default="default", choices=["small", "default"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA device; none is visible", file=sys.stderr)
        return 2
    cfg = load_config(
        None,
        {
            "data.synthetic.preset": args.preset,
            "run.cache_dir": tempfile.mkdtemp(prefix="bench-gpu-"),
            "run.device": "cuda",
            "pretrain.epochs": 1,
            "train.epochs": 1,
            "pretrain.optimizer.lr_milestones": [],  # one epoch: no schedule
            "train.optimizer.lr_milestones": [],
            "train.augmented_views": 1,
            "train.batch_size": args.batch_size,
        },
    )
    prepared = prepare(cfg, progress=True)
    side = load_side_information_file(prepared.side_information_path)
    text = (side.spatial.cuda(), side.temporal.cuda())
    reference = cfg.replace({"train.path": "encoder", "run.bf16": False})
    cached = cfg.replace({"train.path": "cache", "run.bf16": True})
    cached_large = cached.replace({"train.batch_size": args.large_batch})
    samples = len(
        FeatureSource(cached, prepared, torch.device("cuda")).table.select("train", view=0)
    )
    reference_seconds = timed_epochs(reference, prepared, text, side)
    cached_seconds = timed_epochs(cached, prepared, text, side)
    large_seconds = timed_epochs(cached_large, prepared, text, side, epochs=5)
    frames = cfg.model.encoder.feature_frames(cfg.data.window)
    head_train_flops = 3.0 * head_flops(
        cfg.model, cfg.model.encoder.feature_channels, side.dim, 25, frames,
        len(prepared.class_split.training), side.spatial.shape[2],
    )  # fmt: skip
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name)
    achieved = head_train_flops * samples / large_seconds / 1e12
    report = {
        "device": name,
        "train_samples": samples,
        "reference_fp32_encoder_samples_per_s": round(samples / reference_seconds, 1),
        "cache_bf16_samples_per_s": round(samples / cached_seconds, 1),
        f"cache_bf16_batch{args.large_batch}_samples_per_s": round(samples / large_seconds, 1),
        "epoch_ratio_reference_over_cache": round(reference_seconds / cached_seconds, 1),
        "head_tflops_achieved": round(achieved, 2),
        "bf16_peak_tflops": peak,
        "head_fraction_of_peak": None if peak is None else round(achieved / peak, 3),
    }
    print(json.dumps(report, indent=2))
    print("\n| quantity | value |\n|---|---|")
    for key, value in report.items():
        print(f"| {key} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
