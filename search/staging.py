"""Stage 1 and the feature cache on a cluster: built once by a Ray task on a GPU worker, kept on
shared storage, fetched once per node.

On one machine `neuron.prepare.prepare` runs in the driver, as it always has. On a cluster the
driver runs on a CPU head node, where pre-training a Shift-GCN at NTU scale would take days, so
with `prepare.where: worker` (search spec) the same `prepare` runs as a Ray task that reserves
`prepare.gpu` GPUs, `prepare.cpu` CPUs and any custom resources (e.g. `stage1: 1`, offered only
by the multi-GPU node type of `cluster.yaml`):

    driver                      worker (GPU)                       every trial node
    launch_prepare(cfg) ──────► prepare(cfg) in a node-local
                                cache, then publish
                                <shared_cache>/prepared/<key>/
                                  encoder.pt, features.arrow,
                                  side_information.pt, manifest.json
    wait() → StagedPrepared ──────────────────────────────────────► localize(): one download
                                                                    per node (file lock), then
                                                                    trials memory-map it

`<key>` hashes everything stage 1 and the cache depend on (dataset, split, encoder, pre-training,
preprocessing, feature views, seed), so each (split, stage-1 config) is built once: when its
manifest is already on shared storage, no task runs at all. The manifest is written last, so a
build that died midway is simply built again. `shared_cache` is anything pyarrow's filesystems
open: `s3://bucket/prefix` on AWS, or a path every node mounts (NFS).

The functions are small on purpose: the ablation runner calls the same `launch_prepare` /
`localize` around its own trainable.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray

from neuron.atomic import atomic_path
from neuron.cache import file_fingerprint, file_lock, stable_hash
from neuron.config import Config, config_from_plain, to_plain
from neuron.prepare import Prepared, prepare
from neuron.splits import ClassSplit
from search.spec import PrepareSpec

MANIFEST = "manifest.json"
PUBLISHED_FILES = {
    "encoder_checkpoint": "encoder.pt",
    "feature_cache_path": "features.arrow",
    "side_information_path": "side_information.pt",
}
"""Prepared fields every trial reads → their names on shared storage. The dataset itself is
published only for `train.path: encoder` (trials that run the encoder); with the feature cache,
trials never open it."""


@dataclass(frozen=True)
class StagedPrepared:
    """A `Prepared` built on a worker and published under `location` on shared storage."""

    prepared: Prepared
    """As built (its paths are the builder node's; `localize` maps them to each node)."""
    location: str
    """`<shared_cache>/prepared/<key>`."""
    files: dict[str, str]
    """Prepared field → file name under `location`."""
    built_on: dict[str, str]
    """Where stage 1 ran: Ray `node_id`, `hostname`, `pid`, and `reused` when it was found."""

    def describe(self) -> dict[str, Any]:
        return self.prepared.describe()

    @property
    def dataset_name(self) -> str:
        return self.prepared.dataset_name

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.prepared.class_names


AnyPrepared = Prepared | StagedPrepared


def join_uri(uri: str, *parts: str) -> str:
    """`uri` with path parts appended, before any query (pyarrow's S3 URIs take options such
    as `?region=...` or, for an S3-compatible store, `?endpoint_override=host:port`)."""
    base, mark, query = uri.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + mark + query


def _open(location: str, *parts: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of `location` and the path of `parts` under it."""
    filesystem, root = pafs.FileSystem.from_uri(location)
    return filesystem, "/".join([root.rstrip("/"), *parts])


def stage1_key(cfg: Config) -> str:
    """A hash of everything stage 1 and the feature cache depend on (not stage 2)."""
    dataset: Any = cfg.data.path
    if cfg.data.path and Path(cfg.data.path).is_file():
        dataset = file_fingerprint(Path(cfg.data.path))
    return stable_hash(
        {
            "dataset": dataset,
            "data": to_plain(cfg.data),
            "encoder": to_plain(cfg.model.encoder),
            "pretrain": to_plain(cfg.pretrain),
            "views": [cfg.train.augmented_views, cfg.eval.paper_parity, cfg.train.path],
            "seed": cfg.run.seed,
        }
    )


@dataclass
class PendingPrepared:
    """A stage-1 build under way (or done): `wait()` returns what the trials receive."""

    cfg: Config
    progress: bool
    task: Any = None
    done: AnyPrepared | None = None

    def wait(self) -> AnyPrepared:
        if self.done is None:
            if self.task is None:
                self.done = prepare(self.cfg, progress=self.progress)
            else:
                self.done = ray.get(self.task)
        return self.done


def launch_prepare(cfg: Config, spec: PrepareSpec, progress: bool = True) -> PendingPrepared:
    """Start building (or find) stage 1 and the feature cache of `cfg`. `where: driver` builds
    in this process when waited for; `where: worker` starts a Ray task at once (needs
    `ray.init`), unless shared storage already holds the result."""
    if spec.where == "driver":
        return PendingPrepared(cfg, progress)
    assert spec.shared_cache is not None
    location = join_uri(spec.shared_cache, "prepared", stage1_key(cfg))
    found = read_manifest(location)
    if found is not None:
        if progress:
            print(f"stage 1 and feature cache of split {cfg.data.split}: found {location}")
        return PendingPrepared(cfg, progress, done=found)
    if progress:
        print(
            f"stage 1 and feature cache of split {cfg.data.split}: a Ray task on a worker "
            f"({spec.gpu} GPU, {spec.cpu} CPU{', ' if spec.resources else ''}"
            f"{', '.join(f'{k} {v}' for k, v in spec.resources.items())}) → {location}",
            flush=True,
        )
    task = ray.remote(build_and_publish).options(
        num_cpus=spec.cpu,
        num_gpus=spec.gpu,
        resources=dict(spec.resources),
        max_retries=2,
        retry_exceptions=False,
    )
    # A GPU task picks the GPU Ray gave it; on a node without one it runs on the CPU.
    plain = cfg.replace({"run.device": "auto"}).to_dict()
    return PendingPrepared(cfg, progress, task=task.remote(plain, location, dict(spec.inputs)))


def build_and_publish(
    plain: dict[str, Any], location: str, inputs: dict[str, str]
) -> StagedPrepared:
    """The Ray task: `prepare` into this node's cache, then upload what trials read (manifest
    last). Also records where it ran."""
    cfg = config_from_plain(plain)
    fetch_inputs(inputs)
    prepared = prepare(cfg, progress=True)
    files = dict(PUBLISHED_FILES)
    if cfg.train.path == "encoder":
        files["dataset_path"] = "dataset.arrow"
    filesystem, root = _open(location)
    filesystem.create_dir(root, recursive=True)
    for name, remote in files.items():
        pafs.copy_files(
            str(getattr(prepared, name)),
            f"{root}/{remote}",
            destination_filesystem=filesystem,
        )
    built_on = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
        "pid": str(os.getpid()),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    staged = StagedPrepared(prepared, location, files, built_on)
    manifest = json.dumps(_manifest(staged), indent=2)
    temporary = f"{root}/.{MANIFEST}.partial"
    with filesystem.open_output_stream(temporary) as stream:
        stream.write(manifest.encode())
    filesystem.move(temporary, f"{root}/{MANIFEST}")
    return staged


def fetch_inputs(inputs: dict[str, str]) -> None:
    """Download each URI (file or folder) to its local path, unless the path exists (a lock
    makes concurrent tasks on a node download it once)."""
    for local, uri in inputs.items():
        target = Path(local)
        if target.exists():
            continue
        with file_lock(target.parent / f".{target.name}.lock"):
            if target.exists():
                continue
            print(f"downloading {uri} → {target}", flush=True)
            filesystem, root = pafs.FileSystem.from_uri(uri)
            with atomic_path(target) as temporary:
                if filesystem.get_file_info(root).type == pafs.FileType.Directory:
                    temporary.mkdir()
                pafs.copy_files(
                    root,
                    str(temporary),
                    source_filesystem=filesystem,
                    destination_filesystem=pafs.LocalFileSystem(),
                )


def _manifest(staged: StagedPrepared) -> dict[str, Any]:
    prepared = staged.prepared
    return {
        "prepared": {
            "dataset_path": str(prepared.dataset_path),
            "dataset_name": prepared.dataset_name,
            "split": prepared.split,
            "class_names": list(prepared.class_names),
            "class_split": to_plain(prepared.class_split),
            "side_information_path": str(prepared.side_information_path),
            "encoder_checkpoint": str(prepared.encoder_checkpoint),
            "feature_cache_path": str(prepared.feature_cache_path),
            "cache_key": prepared.cache_key,
            "text_encoder": prepared.text_encoder,
            "text_dim": prepared.text_dim,
            "text_embedding_sha256": prepared.text_embedding_sha256,
            "augmentation": dict(prepared.augmentation),
        },
        "files": staged.files,
        "built_on": staged.built_on,
    }


def read_manifest(location: str) -> StagedPrepared | None:
    """The published build at `location`, or None when there is none (yet)."""
    filesystem, root = _open(location)
    if filesystem.get_file_info(f"{root}/{MANIFEST}").type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(f"{root}/{MANIFEST}") as stream:
        manifest = json.loads(stream.read().decode())
    plain = manifest["prepared"]
    prepared = Prepared(
        dataset_path=Path(plain["dataset_path"]),
        dataset_name=plain["dataset_name"],
        split=plain["split"],
        class_names=tuple(plain["class_names"]),
        class_split=ClassSplit(**{k: tuple(v) for k, v in plain["class_split"].items()}),
        side_information_path=Path(plain["side_information_path"]),
        encoder_checkpoint=Path(plain["encoder_checkpoint"]),
        feature_cache_path=Path(plain["feature_cache_path"]),
        cache_key=plain["cache_key"],
        text_encoder=plain.get("text_encoder", ""),
        text_dim=int(plain.get("text_dim", 0)),
        text_embedding_sha256=plain.get("text_embedding_sha256", ""),
        augmentation=dict(plain.get("augmentation", {})),
    )
    return StagedPrepared(
        prepared, location, dict(manifest["files"]), manifest["built_on"] | {"reused": "true"}
    )


def localize(prepared: AnyPrepared | None, cache_dir: Path) -> Prepared | None:
    """What a trial reads, on this node: a `Prepared` as given; a `StagedPrepared` downloaded
    once per node into `<cache_dir>/shared/<key>/` (concurrent trials wait on a file lock,
    later ones find the files)."""
    if not isinstance(prepared, StagedPrepared):
        return prepared
    key = prepared.location.partition("?")[0].rstrip("/").rsplit("/", 1)[1]
    local = cache_dir / "shared" / key
    marker = local / MANIFEST
    if not marker.is_file():
        with file_lock(local.with_suffix(".lock")):
            if not marker.is_file():
                _download(prepared, local)
    paths = {name: local / remote for name, remote in prepared.files.items()}
    return Prepared(**(vars(prepared.prepared) | paths))


def _download(prepared: StagedPrepared, local: Path) -> None:
    filesystem, root = _open(prepared.location)
    local.mkdir(parents=True, exist_ok=True)
    for remote in [*prepared.files.values(), MANIFEST]:
        with atomic_path(local / remote) as temporary:
            pafs.copy_files(
                f"{root}/{remote}",
                str(temporary),
                source_filesystem=filesystem,
                destination_filesystem=pafs.LocalFileSystem(),
            )
