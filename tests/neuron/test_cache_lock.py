"""Cache locks: a waiter says what it waits for; no lock file outlives its holder (even a
failed or SIGKILLed one)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from neuron import cache
from neuron.cache import build_once


def hold_lock(lock: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding `lock` (ready once it printed 'held')."""
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from neuron.cache import file_lock
        with file_lock(Path({str(lock)!r})):
            print("held", flush=True)
            time.sleep({seconds})
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_waiter_says_what_it_waits_for_then_builds(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cache, "LOCK_NOTICE_SECONDS", 0.5)
    target, lock = tmp_path / "entry.bin", tmp_path / "entry.lock"
    holder = hold_lock(lock, 2.0)
    built = []
    build_once(target, lock, lambda: built.append(target.write_text("x")), "encoding X", False)
    assert holder.wait(timeout=30) == 0
    notices = [line for line in capsys.readouterr().err.splitlines() if "waiting" in line]
    assert len(notices) >= 2, notices  # at once, then periodically
    assert all(str(lock) in line and "encoding X" in line for line in notices)
    assert built and target.read_text() == "x"
    assert not lock.exists()


def test_a_failed_build_leaves_no_lock_file_and_no_entry(tmp_path) -> None:
    target, lock = tmp_path / "side.pt", tmp_path / "side.lock"

    def fail() -> None:
        raise ValueError("the text encoder is missing")

    with pytest.raises(ValueError, match="text encoder"):
        build_once(target, lock, fail, "encoding side information", False)
    assert list(tmp_path.iterdir()) == []


def test_a_lock_holder_killed_by_sigkill_frees_the_lock(tmp_path) -> None:
    target, lock = tmp_path / "entry.bin", tmp_path / "entry.lock"
    holder = hold_lock(lock, 600)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    started = time.monotonic()
    build_once(target, lock, lambda: target.write_text("built"), "building", False)
    assert time.monotonic() - started < 5
    assert target.read_text() == "built" and not lock.exists()
