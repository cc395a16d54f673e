"""The MLflow tracking server of a cluster's head node, secured: `python -m search.mlflow_service`.

cluster.yaml runs it on the head (restarted whenever it exits); the tests run the same command on
loopback. What it enforces:

- it binds one private or loopback address, never `0.0.0.0` or a public one;
- `--allowed-hosts` lists only that address and the loopback names an SSH tunnel presents
  (`localhost:5000`, `127.0.0.1:5000`), so DNS rebinding and stray Host headers are refused;
- basic auth is on (`--app-name basic-auth`): the admin user is MLFLOW_TRACKING_USERNAME
  (default `admin`) and its password MLFLOW_TRACKING_PASSWORD, read from the environment, handed
  to MLflow as MLFLOW_AUTH_ADMIN_PASSWORD and never written to a file; the auth config file
  (users database URI, default permission NO_PERMISSIONS) is written with mode 0600;
- runs go to `--backend-store-uri` (PostgreSQL on a cluster: many concurrent writers), artifacts
  are proxied to `--artifacts-destination` (`s3://bucket/prefix`; boto3 honours
  MLFLOW_S3_ENDPOINT_URL for S3-compatible stores).

Drivers reach it as MLFLOW_TRACKING_URI=http://<head private address>:5000 with the same
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the MLflow client reads both).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import sys
from pathlib import Path

from neuron.atomic import atomic_path

PASSWORD_VARIABLE = "MLFLOW_TRACKING_PASSWORD"
USERNAME_VARIABLE = "MLFLOW_TRACKING_USERNAME"


class ServiceError(ValueError):
    """The server cannot start securely; the message says what to fix."""


def check_host(host: str) -> None:
    """Only a private or loopback IP address: the server must not listen on a public one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError as error:
        raise ServiceError(
            f"--host {host!r}: give the head's private IP address (e.g. 10.0.1.23) or 127.0.0.1"
        ) from error
    if address.is_unspecified or not (address.is_private or address.is_loopback):
        raise ServiceError(
            f"--host {host}: not a private or loopback address; the tracking server is reached "
            "through the private network or an SSH tunnel, never on a public or wildcard address"
        )


def allowed_hosts(host: str, port: int) -> str:
    """Host headers the server accepts: its own address and what an SSH tunnel presents."""
    names = [host, "localhost", "127.0.0.1"]
    return ",".join(dict.fromkeys(n for name in names for n in (name, f"{name}:{port}")))


def write_auth_config(path: Path, database_uri: str, admin_username: str) -> Path:
    """MLflow's basic-auth config: the users database, the admin's name, no password (that comes
    from the environment), and no permission for users until granted one."""
    text = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    with atomic_path(path) as temporary:
        temporary.touch(mode=0o600)
        temporary.write_text(text)
    return path


def flask_secret_key(state_dir: Path) -> str:
    """The key that signs the UI's CSRF tokens: random, made once, kept in the state folder
    (mode 0600) so that every worker process and every restart uses the same one."""
    path = state_dir / "flask_secret_key"
    if not path.is_file():
        with atomic_path(path) as temporary:
            temporary.touch(mode=0o600)
            temporary.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def server_command(args: argparse.Namespace, mlflow: str) -> list[str]:
    command = [
        mlflow,
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--allowed-hosts",
        allowed_hosts(args.host, args.port),
        "--workers",
        str(args.workers),
        "--backend-store-uri",
        args.backend_store_uri,
        "--artifacts-destination",
        args.artifacts_destination,
    ]
    return command


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m search.mlflow_service",
        description="Run the secured MLflow tracking server of a cluster's head node.",
    )
    parser.add_argument("--host", required=True, help="the head's private IP (or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn/uvicorn workers")
    parser.add_argument(
        "--backend-store-uri",
        required=True,
        help="postgresql://user:password@127.0.0.1:5432/mlflow (or a managed PostgreSQL URI)",
    )
    parser.add_argument(
        "--auth-database-uri", required=True, help="the basic-auth users database (PostgreSQL)"
    )
    parser.add_argument(
        "--artifacts-destination", required=True, help="s3://bucket/prefix for run artifacts"
    )
    parser.add_argument(
        "--state-dir", required=True, type=Path, help="where the auth config file is written"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        check_host(args.host)
        password = os.environ.get(PASSWORD_VARIABLE, "")
        if len(password) < 12:
            raise ServiceError(
                f"{PASSWORD_VARIABLE}: set it (at least 12 characters) in the environment, e.g. "
                "from ~/.neuron-search/cluster.env or your secret store; it is the admin password"
            )
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    username = os.environ.get(USERNAME_VARIABLE) or "admin"
    auth_config = write_auth_config(
        args.state_dir / "basic_auth.ini", args.auth_database_uri, username
    )
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow is None:
        print("error: no `mlflow` command next to this Python or on PATH", file=sys.stderr)
        return 2
    environment = dict(os.environ)
    environment["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
    environment["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    environment.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", flask_secret_key(args.state_dir))
    command = server_command(args, mlflow)
    print("starting: " + " ".join(command), flush=True)
    os.execve(mlflow, command, environment)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
