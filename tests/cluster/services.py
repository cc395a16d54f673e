"""The cluster's services, real, on loopback: a throwaway PostgreSQL cluster, the moto S3
emulator, the secured MLflow server (`python -m search.mlflow_service`, as on the head) and a Ray
head with Ray's fake multi-node autoscaler (tests/cluster/cluster.local.yaml)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.search.helpers import descendants, end_processes

BIN = Path(sys.executable).parent
LOCAL_CLUSTER = Path(__file__).with_name("cluster.local.yaml")
POSTGRES_BIN = next(
    (p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(poll_s)


def stop(process: subprocess.Popen, children: list[int]) -> None:
    """End a process we started and the descendants recorded while it ran (by pid)."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    end_processes(children)


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot run here, or None."""
    if POSTGRES_BIN is None or not (POSTGRES_BIN / "initdb").exists():
        return "no PostgreSQL server binaries (scripts/test.sh installs Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run the server as"
    return None


@dataclass
class Postgres:
    port: int
    password: str

    def uri(self, database: str) -> str:
        return f"postgresql://mlflow:{self.password}@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def postgres(databases: tuple[str, ...]) -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster (initdb in a temporary folder) on 127.0.0.1, password auth,
    run as the `postgres` user when we are root (the server refuses root)."""
    assert POSTGRES_BIN is not None
    folder = Path(tempfile.mkdtemp(prefix="neuron-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chmod(folder, 0o755)
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    password, port = secrets.token_hex(16), free_port()
    data = folder / "data"
    pwfile = folder / "pwfile"
    pwfile.write_text(password)
    if as_user:
        shutil.chown(pwfile, "postgres", "postgres")

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    run(
        str(POSTGRES_BIN / "initdb"),
        "-D",
        str(data),
        "-U",
        "mlflow",
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
    )
    pwfile.unlink()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    run(
        str(POSTGRES_BIN / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(folder / "log"),
        "-o",
        options,
        "-w",
        "start",
    )
    try:
        environment = os.environ | {"PGPASSWORD": password}
        for database in databases:
            subprocess.run(
                [
                    str(POSTGRES_BIN / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "mlflow",
                    database,
                ],
                check=True,
                capture_output=True,
                env=environment,
                timeout=60,
            )
        yield Postgres(port, password)
    finally:
        subprocess.run(
            [*as_user, str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "emulator",
    "AWS_SECRET_ACCESS_KEY": "emulator",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""The emulator accepts any key; these are not credentials of anything."""


@contextlib.contextmanager
def s3_emulator(bucket: str) -> Iterator[str]:
    """moto's S3 server, an emulator of the S3 API, on 127.0.0.1; yields its endpoint URL."""
    import boto3

    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                return True
            except urllib.error.HTTPError:
                return True
            except OSError:
                assert server.poll() is None, "moto_server exited"
                return False

        wait_until(up, 60, "moto S3 emulator")
        client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        client.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        stop(server, [])


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def s3_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@dataclass
class MlflowService:
    uri: str
    username: str
    password: str
    environment: dict[str, str]
    """What a driver needs: the tracking URI, credentials and the S3 endpoint."""


@contextlib.contextmanager
def secured_mlflow(
    database: Postgres, s3_endpoint: str, bucket: str, state: Path
) -> Iterator[MlflowService]:
    """`python -m search.mlflow_service` exactly as cluster.yaml runs it, on loopback."""
    from search.tracking import TrackingError, check_tracking_uri

    port = free_port()
    password = secrets.token_urlsafe(18)
    environment = {
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        **S3_CREDENTIALS,
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "search.mlflow_service",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            database.uri("mlflow"),
            "--auth-database-uri",
            database.uri("mlflow_auth"),
            "--artifacts-destination",
            f"s3://{bucket}/mlflow-artifacts",
            "--state-dir",
            str(state),
        ],
        env=os.environ | environment,
        stdout=(state / "mlflow.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    children: list[int] = []
    try:
        previous = {k: os.environ.get(k) for k in environment}
        os.environ.update(environment)  # check_tracking_uri's client authenticates with them
        try:

            def ready() -> bool:
                try:
                    check_tracking_uri(uri, timeout_s=2)
                    return True
                except TrackingError:
                    assert server.poll() is None, (state / "mlflow.log").read_text()[-3000:]
                    return False

            wait_until(ready, 180, "secured mlflow server", poll_s=1)
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        children = descendants(server.pid)
        yield MlflowService(uri, "admin", password, environment | {"MLFLOW_TRACKING_URI": uri})
    finally:
        children = sorted(set(children) | set(descendants(server.pid)))
        stop(server, children)


@dataclass
class FakeCluster:
    gcs_address: str
    dashboard_url: str
    token: str
    environment: dict[str, str]
    """The environment of every process of the cluster (and of `ray job submit`)."""
    log: Path

    def api(self, path: str, token: str | None = "") -> tuple[int, object]:
        """GET the dashboard's HTTP API with the cluster token (or `token`; None: none)."""
        request = urllib.request.Request(self.dashboard_url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def nodes(self) -> list[dict]:
        status, answer = self.api("/api/v0/nodes?detail=true&limit=100")
        assert status == 200, answer
        assert isinstance(answer, dict)
        return answer["data"]["result"]["result"]

    def alive_workers(self) -> list[dict]:
        return [n for n in self.nodes() if n["state"] == "ALIVE" and not n["is_head_node"]]


@contextlib.contextmanager
def fake_cluster(folder: Path, extra_environment: dict[str, str]) -> Iterator[FakeCluster]:
    """A Ray head on 127.0.0.1 (unusual ports) with the fake multi-node autoscaler and token
    auth on, started with `ray start --head --block` and ended by pid (never `ray stop`)."""
    port, dashboard = free_port(), free_port()
    # Ray's session folder holds AF_UNIX sockets (107 bytes at most): a short folder of its own,
    # not under pytest's growing tmp path.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    config = yaml.safe_load(LOCAL_CLUSTER.read_text())
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    autoscaling = folder / "cluster.local.json"
    autoscaling.write_text(json.dumps(config))
    token = secrets.token_hex(32)
    environment = {
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra_environment,
    }
    environment.pop("RAY_ADDRESS", None)
    log = folder / "head.log"
    # With `ray[client]` installed, `ray start` always runs a Ray client server (default port
    # 10001, shared with anyone else's head on this machine): give it a free port.
    client_port = (
        []
        if importlib.util.find_spec("grpc") is None
        else [f"--ray-client-server-port={free_port()}"]
    )
    started = subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--autoscaling-config={autoscaling}",
            "--num-cpus=0",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--temp-dir={temp_dir}",
            *client_port,
            "--disable-usage-stats",
        ],
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | environment,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        timeout=300,
        check=False,
    )
    cluster = FakeCluster(
        f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", token, environment, log
    )
    failures: list[str] = []
    try:
        assert started.returncode == 0, log.read_text()[-3000:]

        def up() -> bool:
            try:
                return any(n["is_head_node"] for n in cluster.nodes())
            except (OSError, AssertionError, KeyError) as error:
                failures.append(repr(error)[:500])
                return False

        try:
            wait_until(up, 120, "fake cluster head", poll_s=1)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; last answers: {failures[-2:]}") from None
        yield cluster
    finally:
        end_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def session_processes(temp_dir: Path) -> list[int]:
    """Every process of the Ray cluster whose files live under `temp_dir` (each Ray process
    names its session folder on its command line), with their descendants."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(temp_dir) in command:
            found.append(int(entry.name))
    return sorted({*found, *(child for pid in found for child in descendants(pid))})


def end_cluster(temp_dir: Path) -> None:
    """Stop the head started with `--temp-dir=temp_dir` and its fake nodes, by pid: SIGTERM,
    then SIGKILL whatever is left after 15 s."""
    pids = session_processes(temp_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.5)
    end_processes([*pids, *session_processes(temp_dir)])
