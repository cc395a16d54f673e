"""Stage-2 epoch time: from the feature cache vs through the frozen encoder (the reference's way).

Same data, same batch size, same head, one process, one run. Prints JSON, then a Markdown table,
with the measured ratio next to the FLOP bound computed from the actual config:

    bound = (encoder forward + head forward+backward) / head forward+backward

Also stage-1 and stage-2 throughput (samples/s). The encoder path also pays the host-side
preprocessing (crop, resize) that the cache path skips, so the measured ratio may exceed the bound.

    .venv/bin/python bench/bench_stage2.py            # reference model sizes, synthetic data
    .venv/bin/python bench/bench_stage2.py --quick    # the quick config (seconds)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neuron.config import load_config
from neuron.device import resolve_device
from neuron.encoder import encoder_flops
from neuron.extract import FeatureSource
from neuron.model import head_flops
from neuron.prepare import load_side_information_file, prepare
from neuron.train import build_head, train_one_epoch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="the quick config instead of reference sizes"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="reuse a cache directory (default: a temporary one)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="bench-stage2-")
    overrides = {
        "run.cache_dir": cache_dir,
        "pretrain.epochs": 1,
        "train.epochs": 1,
        "pretrain.optimizer.lr_milestones": [],  # one epoch: no schedule
        "train.optimizer.lr_milestones": [],
        "train.augmented_views": 1,
        "data.synthetic.preset": "small",
        "run.threads": args.threads,
    }
    cfg = load_config("quick" if args.quick else None, overrides)
    started = time.perf_counter()
    prepared = prepare(cfg, progress=False)
    prepare_seconds = time.perf_counter() - started

    device = resolve_device(cfg.run.device)
    side = load_side_information_file(prepared.side_information_path)
    text = (side.spatial.to(device), side.temporal.to(device))
    results: dict[str, float] = {}
    train_samples = 0
    for path in ("cache", "encoder"):
        path_cfg = cfg.replace({"train.path": path})
        source = FeatureSource(path_cfg, prepared, device)
        train_samples = len(source.table.select("train", view=0))
        head = build_head(path_cfg, source.table, side.dim).to(device)
        optimizer = torch.optim.SGD(
            head.parameters(), lr=cfg.train.optimizer.lr, momentum=0.9, nesterov=True
        )
        train_one_epoch(
            path_cfg, head, source, text, prepared.class_split.training, optimizer, epoch=1
        )  # warm-up
        timings = []
        for epoch in (2, 3):
            tick = time.perf_counter()
            train_one_epoch(
                path_cfg, head, source, text, prepared.class_split.training, optimizer, epoch=epoch
            )
            timings.append(time.perf_counter() - tick)
        results[f"{path}_epoch_seconds"] = float(np.median(timings))

    frames = cfg.model.encoder.feature_frames(cfg.data.window)
    encoder_forward = encoder_flops(cfg.model.encoder, cfg.data.window, 25, cfg.data.max_bodies)
    head_forward = head_flops(
        cfg.model,
        cfg.model.encoder.feature_channels,
        side.dim,
        25,
        frames,
        len(prepared.class_split.training),
        side.spatial.shape[2],
    )
    head_train = 3.0 * head_forward  # forward + backward ≈ 3 × forward
    report = {
        "config": "quick" if args.quick else "reference sizes",
        "device": str(device),
        "threads": args.threads,
        "train_samples_per_epoch": train_samples,
        "batch_size": cfg.train.batch_size,
        "prepare_seconds (stage 1 x1 epoch + cache)": round(prepare_seconds, 2),
        "cache_epoch_seconds": round(results["cache_epoch_seconds"], 3),
        "encoder_epoch_seconds": round(results["encoder_epoch_seconds"], 3),
        "measured_ratio": round(
            results["encoder_epoch_seconds"] / results["cache_epoch_seconds"], 2
        ),
        "flop_bound_ratio": round((encoder_forward + head_train) / head_train, 2),
        "encoder_forward_gflop_per_sample": round(encoder_forward / 1e9, 3),
        "head_forward_backward_gflop_per_sample": round(head_train / 1e9, 3),
        "stage2_cache_samples_per_second": round(train_samples / results["cache_epoch_seconds"], 1),
        "stage2_encoder_samples_per_second": round(
            train_samples / results["encoder_epoch_seconds"], 1
        ),
    }
    print(json.dumps(report, indent=2))
    print()
    print("| quantity | value |")
    print("|---|---|")
    for key, value in report.items():
        print(f"| {key} | {value} |")
    Path("runs").mkdir(exist_ok=True)


if __name__ == "__main__":
    main()
