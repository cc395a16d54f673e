"""cluster.yaml: Ray's own autoscaler validation, offline, and the security properties read
from the file (what a reviewer would check by eye, as tests)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from search.mlflow_service import ServiceError, allowed_hosts, check_host

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def config(text: str) -> dict:
    return yaml.safe_load(text)


def commands(config: dict, *sections: str) -> str:
    return "\n".join(line for section in sections for line in config.get(section, []))


def test_ray_validates_and_prepares_the_config_offline(config):
    # What `ray up` does before it contacts AWS: merge the provider defaults, then validate
    # against ray-schema.json and Ray's own checks.
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and types["head"]["resources"] == {"CPU": 0}
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert sorted(t["resources"]["GPU"] for t in gpu_types.values()) == [1, 4]
    assert all(t["min_workers"] == 0 for t in gpu_types.values())
    assert all(0 < t["max_workers"] <= prepared["max_workers"] for t in gpu_types.values())
    # The multi-GPU type alone offers the resource the stage-1 task asks for (search/specs).
    assert [n for n, t in types.items() if "stage1" in t["resources"]] == ["gpu4"]
    # prepare_config merged the common setup commands into the head's and the workers'.
    assert any("neuron_search-" in c for c in prepared["worker_setup_commands"])


def test_a_config_ray_would_refuse_is_refused(config):
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu1"]["resources"] = {"GPU": "one"}
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        validate_config(prepare_config(broken))
    unknown = copy.deepcopy(config) | {"idle_timeout_minute": 5}
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minute"):
        validate_config(prepare_config(unknown))


def test_the_user_edited_values_come_first(text):
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    first_keys = [line.split(":")[0] for line in body if not line.startswith(" ")][:5]
    assert first_keys == [
        "cluster_name",
        "idle_timeout_minutes",
        "max_workers",
        "provider",
        "available_node_types",
    ]
    top = text.split("# ---- nothing to edit below")[0]
    for edited in ("idle_timeout_minutes", "region", "InstanceType", "max_workers"):
        line = next(line for line in top.splitlines() if line.strip().startswith(edited))
        above = top.splitlines()[top.splitlines().index(line) - 1].strip()
        assert "#" in line or above.startswith("#"), f"{edited} has no comment"


def test_the_project_and_ray_are_pinned(config):
    from neuron import __version__ as version  # pyproject.toml reads the version from there

    setup = commands(config, "setup_commands")
    assert f"neuron_search-{version}-py3-none-any.whl" in setup
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"


def test_nothing_listens_on_a_public_address(config, text):
    assert "0.0.0.0" not in text
    head = commands(config, "head_start_ray_commands")
    assert "--dashboard-host=127.0.0.1" in head
    # MLflow: started through the service wrapper, on the head's private address, on loopback
    # PostgreSQL; the wrapper refuses any other host (below).
    assert "python -m search.mlflow_service" in head
    assert '--host "$(hostname -I | cut -d" " -f1)"' in head
    assert "listen_addresses=127.0.0.1" in head
    # Ray creates a security group with SSH and intra-cluster rules only: none added here.
    group = config["provider"]["security_group"]
    assert group == {"GroupName": "neuron-search"}
    assert not any(
        "IpPermissions" in t["node_config"] for t in config["available_node_types"].values()
    )
    assert not any(
        "SecurityGroupIds" in t["node_config"] for t in config["available_node_types"].values()
    )


def test_ray_token_auth_is_on_everywhere(config):
    for section in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[section] if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start, section
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"


def test_mlflow_has_auth_postgres_and_s3_artifacts(config):
    head = commands(config, "head_start_ray_commands")
    assert '--backend-store-uri "postgresql://' in head
    assert '--artifacts-destination "$NEURON_S3/' in head
    assert "--auth-database-uri" in head
    setup = commands(config, "head_setup_commands")
    assert "--auth=scram-sha-256" in setup and "export MLFLOW_TRACKING_URI=" in setup


def test_no_credentials_in_the_file(config, text):
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"(?i)aws_(secret_access_key|access_key_id|session_token)", text)
    assert "PRIVATE KEY" not in text and "ssh_private_key" not in text
    # Passwords only ever as variables; secrets only mounted from the user's home.
    for match in re.finditer(r"(?i)password[\"']?\s*[:=]\s*(\S+)", text):
        assert match.group(1).startswith(("$", "<", '"$')), match.group(0)
    assert re.search(r"postgresql://mlflow:\$PGPASSWORD@", text)
    secret_mounts = {k: v for k, v in config["file_mounts"].items() if "dist" not in k}
    assert secret_mounts and all(v.startswith("~/") for v in secret_mounts.values())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "8.8.8.8", "mlflow.example.com", ""])
def test_the_service_refuses_public_and_wildcard_hosts(host):
    with pytest.raises(ServiceError):
        check_host(host)


def test_the_service_accepts_private_addresses_and_names_only_them():
    for host in ("10.0.1.23", "172.31.5.4", "192.168.0.2", "127.0.0.1"):
        check_host(host)
    hosts = allowed_hosts("10.0.1.23", 5000).split(",")
    assert hosts == [
        "10.0.1.23",
        "10.0.1.23:5000",
        "localhost",
        "localhost:5000",
        "127.0.0.1",
        "127.0.0.1:5000",
    ]


def test_the_shipped_cluster_specs_fit_the_cluster(config):
    """search/specs/ntu60.yaml and ablations/specs/neuron_components.yaml read and write only
    where cluster.yaml's nodes can: the persistent volume mounted in the container, S3 for what
    every node shares, and inputs the stage-1 worker downloads first."""
    from ablations.spec import build_plan, load_ablation_spec
    from search.spec import load_search_spec

    mounts = [o.split()[-1] for o in config["docker"]["run_options"] if o.startswith("-v ")]
    volume = Path(next(m.split(":")[1] for m in mounts if "neuron-state" in m))
    stage1_resources = set(config["available_node_types"]["gpu4"]["resources"])
    search = load_search_spec(ROOT / "search" / "specs" / "ntu60.yaml")
    plan = build_plan(load_ablation_spec(ROOT / "ablations" / "specs" / "neuron_components.yaml"))
    configs = [search.base_config(split) for split in search.splits]
    configs += [plan.config(cell) for cell in plan.cells]
    for spec in (search, plan.spec):
        assert Path(spec.output_dir).is_relative_to(volume), spec.output_dir
        assert spec.storage_path.startswith("s3://"), spec.storage_path
        assert spec.prepare.where == "worker" and spec.prepare.shared_cache.startswith("s3://")
        assert set(spec.prepare.resources) <= stage1_resources
        assert all(uri.startswith("s3://") for uri in spec.prepare.inputs.values())
        for cfg in configs:
            inputs = spec.prepare.inputs
            for path in (cfg.data.path, cfg.data.side_information.path, cfg.run.cache_dir):
                assert Path(path).is_relative_to(volume), path
            assert cfg.data.path in inputs and cfg.data.side_information.path in inputs
