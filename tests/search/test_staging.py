"""search.staging without a cluster: URIs with options, the published layout, one download per
node, and the spec's checks (the simulated cluster test runs the Ray task itself)."""

from __future__ import annotations

import json
import shutil

import pytest

from neuron.config import ConfigError, load_config
from neuron.prepare import prepare
from search.spec import PrepareSpec
from search.staging import (
    MANIFEST,
    PUBLISHED_FILES,
    StagedPrepared,
    _manifest,
    fetch_inputs,
    join_uri,
    localize,
    read_manifest,
    stage1_key,
)


def test_join_uri_keeps_the_query_of_s3_uris():
    assert join_uri("s3://b/p?endpoint_override=h:1&scheme=http", "prepared", "k") == (
        "s3://b/p/prepared/k?endpoint_override=h:1&scheme=http"
    )
    assert join_uri("/nfs/shared/", "prepared", "k") == "/nfs/shared/prepared/k"


def test_the_stage1_key_ignores_stage2_and_follows_stage1(tmp_path):
    cfg = load_config("tiny", {"run.cache_dir": str(tmp_path)})
    assert stage1_key(cfg) == stage1_key(
        cfg.replace({"train.optimizer.lr": 0.3, "model.hidden": 32})
    )
    assert stage1_key(cfg) != stage1_key(cfg.replace({"pretrain.epochs": 3}))
    assert stage1_key(cfg) != stage1_key(cfg.replace({"data.split": "synthetic_alt"}))


def test_a_published_build_is_read_back_and_fetched_once_per_node(tmp_path, tiny_cache):
    cfg = load_config("tiny", {"run.cache_dir": str(tiny_cache)})
    prepared = prepare(cfg, progress=False)
    location = str(tmp_path / "shared" / "prepared" / stage1_key(cfg))
    assert read_manifest(location) is None
    (tmp_path / "shared" / "prepared" / stage1_key(cfg)).mkdir(parents=True)
    for field, name in PUBLISHED_FILES.items():
        shutil.copy(getattr(prepared, field), f"{location}/{name}")
    staged = StagedPrepared(prepared, location, dict(PUBLISHED_FILES), {"node_id": "n1"})
    (tmp_path / "shared" / "prepared" / stage1_key(cfg) / MANIFEST).write_text(
        json.dumps(_manifest(staged))
    )

    found = read_manifest(location)
    assert found is not None and found.prepared == prepared
    assert found.built_on == {"node_id": "n1", "reused": "true"}
    node = tmp_path / "node"
    local = localize(found, node)
    assert local is not None
    for field, name in PUBLISHED_FILES.items():
        path = getattr(local, field)
        assert path.parent.parent == node / "shared" and path.name == name
        assert path.read_bytes() == getattr(prepared, field).read_bytes()
    assert local.class_split == prepared.class_split and local.cache_key == prepared.cache_key
    stamps = {p: p.stat().st_mtime_ns for p in (node / "shared").rglob("*") if p.is_file()}
    assert localize(found, node) == local  # the second trial on the node downloads nothing
    assert stamps == {p: p.stat().st_mtime_ns for p in (node / "shared").rglob("*") if p.is_file()}
    assert localize(prepared, node) is prepared  # a driver-built Prepared passes through


def test_inputs_are_downloaded_once(tmp_path):
    source = tmp_path / "bucket" / "data"
    source.mkdir(parents=True)
    (source / "a.txt").write_text("a")
    target = tmp_path / "worker" / "data"
    fetch_inputs({str(target): str(source)})
    assert (target / "a.txt").read_text() == "a"
    (source / "a.txt").write_text("changed")
    fetch_inputs({str(target): str(source)})
    assert (target / "a.txt").read_text() == "a"


def test_the_prepare_section_is_checked():
    with pytest.raises(ConfigError, match="prepare.shared_cache: required"):
        PrepareSpec(where="worker")
    with pytest.raises(ConfigError, match="prepare.inputs"):
        PrepareSpec(where="worker", shared_cache="s3://b/p", inputs={"data/x": "s3://b/x"})
    with pytest.raises(ConfigError, match="every amount must be >= 0"):
        PrepareSpec(gpu=-1)
