"""Helpers of the search tests: specs under a temporary folder, process hygiene."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from search.spec import SearchSpec, load_search_spec
from search.tracking import TrackingError, check_tracking_uri

SPECS = Path(__file__).resolve().parents[2] / "search" / "specs"


def tiny_spec(tmp_path: Path, store: str, cache: Path, *overrides: str) -> SearchSpec:
    """search/specs/tiny.yaml writing everything under tmp_path."""
    return load_search_spec(
        SPECS / "tiny.yaml",
        [
            f"output_dir={tmp_path / 'out'}",
            f"tracking_uri={store}",
            f"base.overrides.run.cache_dir={cache}",
            *overrides,
        ],
    )


def descendants(pid: int) -> list[int]:
    """All live descendant process ids of `pid` (from /proc; no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def end_processes(pids: list[int]) -> None:
    """SIGKILL the processes still alive among `pids` (ours: recorded before their parent died)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


@contextlib.contextmanager
def mlflow_server(folder: Path, template: Path) -> Iterator[str]:
    """A real `mlflow server --workers 1` on a free loopback port, on a copy of the migrated
    SQLite `template` and with its artifacts under `folder`; yields its URI."""
    shutil.copy(template, folder / "server.db")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                check_tracking_uri(uri, timeout_s=2)
                break
            except TrackingError:
                assert server.poll() is None and time.monotonic() < deadline, (
                    "mlflow server did not start"
                )
                time.sleep(1)
        children = descendants(server.pid)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        end_processes(children)
