"""Stage-2 epoch time: from the feature cache vs through the frozen encoder (the reference's way).

Same data, same batch size, same head, one process, one run. Prints JSON, then a Markdown table,
with the measured ratio next to the FLOP bound computed from the actual config:

    bound = (encoder forward + head forward+backward) / head forward+backward

Also stage-1 and stage-2 throughput (samples/s). The encoder path also pays the host-side
preprocessing (crop, resize) that the cache path skips, so the measured ratio may exceed the bound.

The encoder's training rate is measured on stage-1 steps exactly as `pretrain_encoder` runs them
(augmenting clip loader, forward, backward, SGD step): `encoder_train_gflops_per_second` counts
forward + backward as 3 × the forward FLOPs, like `head_train_gflops_per_second` (stage-2 head on
the cache path). Their ratio says how close the encoder runs to the rate the same process reaches
on the head. System vs user CPU time (`resource.getrusage`, this process and its loader workers)
is reported for those stage-1 steps and for `prepare` (stage 1 + feature cache). The stage-1 steps
run twice: with the C allocator's defaults (`*_allocator_defaults`), then inside
`neuron.device.keep_host_memory` as `prepare` and `fit` run them (every other figure).

    .venv/bin/python bench/bench_stage2.py            # reference model sizes, synthetic data
    .venv/bin/python bench/bench_stage2.py --quick    # the quick config (seconds)
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neuron.atomic import write_text_atomic
from neuron.config import Config, load_config
from neuron.dataset import open_dataset
from neuron.device import keep_host_memory, resolve_device
from neuron.encoder import encoder_flops
from neuron.extract import FeatureSource
from neuron.model import head_flops
from neuron.optim import sgd
from neuron.prepare import dataset_file, load_side_information_file, prepare, split_samples
from neuron.pretrain import ClipDataset, build_encoder
from neuron.train import build_head, train_one_epoch

WARMUP_STEPS = 2
"""Untimed stage-1 steps before the timed ones."""


def cpu_times() -> tuple[float, float]:
    """(user, system) CPU seconds of this process and its waited-for children (loader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime


def stage1_steps(cfg: Config, device: torch.device, steps: int) -> dict[str, float]:
    """Time `steps` stage-1 training steps as `pretrain_encoder` runs them: the augmenting clip
    loader, forward, cross-entropy, backward, SGD step. After `WARMUP_STEPS` untimed steps: the
    first steps also allocate the momentum buffers and grow the heap that later steps reuse (an
    epoch at reference sizes on NTU is hundreds of steps)."""
    table = open_dataset(dataset_file(cfg))
    class_split, samples = split_samples(cfg, table)
    training = np.asarray(class_split.training)
    remap = {int(c): i for i, c in enumerate(training)}
    rows = samples["train"]
    labels = np.array([remap[int(c)] for c in table.labels[rows]])
    torch.manual_seed(cfg.run.seed)
    encoder = build_encoder(cfg, len(training), table.info.num_joints).to(device).train()
    settings = cfg.pretrain.optimizer
    optimizer = sgd(encoder.parameter_groups(settings.weight_decay), settings)
    dataset = ClipDataset(cfg, table, rows, labels, augment=True)
    dataset.epoch = 1
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.pretrain.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.run.seed),
        num_workers=cfg.run.num_workers,
        drop_last=len(dataset) > cfg.pretrain.batch_size,
    )
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    samples_seen = 0
    for step in range(steps + WARMUP_STEPS):
        if step == WARMUP_STEPS:
            user, system = cpu_times()
            tick = time.perf_counter()
            samples_seen = 0
        clips, targets = next(batches)
        clips, targets = clips.to(device), targets.to(device)
        loss = torch.nn.functional.cross_entropy(encoder(clips), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        samples_seen += len(targets)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - tick
    user_end, system_end = cpu_times()
    return {
        "seconds": seconds,
        "samples": samples_seen,
        "user": user_end - user,
        "system": system_end - system,
    }


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
    parser.add_argument("--out", default=None, help="also write the JSON report to this file")
    parser.add_argument(
        "--stage1-steps", type=int, default=6, help="timed stage-1 training steps (after a warm-up)"
    )
    parser.add_argument(
        "--preset",
        default=None,
        help="synthetic preset (default: small with --quick, tiny at reference sizes so that the "
        "one-epoch stage 1 of `prepare` stays short; rates are per sample either way)",
    )
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
        "data.synthetic.preset": args.preset or ("small" if args.quick else "tiny"),
        "run.threads": args.threads,
    }
    cfg = load_config("quick" if args.quick else None, overrides)
    device = resolve_device(cfg.run.device)
    # Stage 1 with the C allocator's defaults, before anything in this process has kept memory
    # (afterwards freed blocks stay in the heap's free lists and later allocations reuse them).
    dataset_file(cfg, progress=False)
    stage1_default = stage1_steps(cfg, device, args.stage1_steps)
    started = time.perf_counter()
    user, system = cpu_times()
    prepared = prepare(cfg, progress=False)
    prepare_seconds = time.perf_counter() - started
    user_end, system_end = cpu_times()
    prepare_user, prepare_system = user_end - user, system_end - system

    side = load_side_information_file(prepared.side_information_path)
    text = (side.spatial.to(device), side.temporal.to(device))
    results: dict[str, float] = {}
    train_samples = 0
    # Everything else as `prepare` and `fit` run it: inside `keep_host_memory`.
    with keep_host_memory():
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
                    path_cfg,
                    head,
                    source,
                    text,
                    prepared.class_split.training,
                    optimizer,
                    epoch=epoch,
                )
                timings.append(time.perf_counter() - tick)
            results[f"{path}_epoch_seconds"] = float(np.median(timings))
        stage1 = stage1_steps(cfg, device, args.stage1_steps)

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
    encoder_train_rate = 3.0 * encoder_forward * stage1["samples"] / stage1["seconds"] / 1e9
    head_train_rate = head_train * train_samples / results["cache_epoch_seconds"] / 1e9
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
        "stage1_samples_per_second": round(stage1["samples"] / stage1["seconds"], 1),
        "stage1_samples_per_second_allocator_defaults": round(
            stage1_default["samples"] / stage1_default["seconds"], 1
        ),
        "stage1_system_to_user_ratio_allocator_defaults": round(
            stage1_default["system"] / max(stage1_default["user"], 1e-9), 3
        ),
        "encoder_train_gflops_per_second": round(encoder_train_rate, 2),
        "head_train_gflops_per_second": round(head_train_rate, 2),
        "encoder_to_head_gflops_ratio": round(encoder_train_rate / head_train_rate, 3),
        "stage1_user_seconds": round(stage1["user"], 2),
        "stage1_system_seconds": round(stage1["system"], 2),
        "stage1_system_to_user_ratio": round(stage1["system"] / max(stage1["user"], 1e-9), 3),
        "prepare_user_seconds": round(prepare_user, 2),
        "prepare_system_seconds": round(prepare_system, 2),
        "prepare_system_to_user_ratio": round(prepare_system / max(prepare_user, 1e-9), 3),
    }
    table = "\n".join(
        [
            "| quantity | value |",
            "|---|---|",
            *(f"| {key} | {value} |" for key, value in report.items()),
        ]
    )
    print(json.dumps(report, indent=2))
    print()
    print(table)
    if args.out:  # the JSON, and the Markdown table beside it
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(report, indent=2) + "\n")
        write_text_atomic(out.with_suffix(".md"), table + "\n")


if __name__ == "__main__":
    main()
