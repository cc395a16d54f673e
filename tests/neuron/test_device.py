"""Host memory kept for reuse during training (`neuron.device.keep_host_memory`)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from neuron.device import HOST_ALLOCATOR_TUNABLES, host_allocator_environment

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A child process allocates and frees a 64 MiB tensor (above glibc's largest mmap threshold)
# 20 times outside and inside `keep_host_memory`, and prints the minor page faults of each and
# its resident memory inside the block and after it.
FAULTS = """
import json, resource, torch
from neuron.device import keep_host_memory

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 2**20

def faults_of_allocations():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        block = torch.ones(16 * 1024 * 1024)  # 64 MiB, every page written
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

outside = faults_of_allocations()
with keep_host_memory():
    inside = faults_of_allocations()
    resident_inside = resident_mib()
resident_after = resident_mib()
print(json.dumps({"outside": outside, "inside": inside, "resident_inside": resident_inside,
                  "resident_after": resident_after}))
"""


@pytest.mark.skipif(not GLIBC, reason="the host allocator settings are glibc's")
def test_keep_host_memory_reuses_freed_blocks_and_hands_them_back() -> None:
    pages = 64 * 1024 * 1024 // 4096
    result = subprocess.run(
        [sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True, timeout=120
    )
    faults = json.loads(result.stdout.strip().splitlines()[-1])
    # glibc's default: every 64 MiB block is a fresh mmap, so every page faults each time.
    assert faults["outside"] >= 19 * pages, faults
    # Kept: freed blocks are reused (a few new ones appear where small allocations of the
    # interpreter split a freed block; measured: 8 of 20).
    assert faults["inside"] <= 12 * pages, faults
    # When the block ends the kept blocks go back to the system (measured: 732 → 220 MiB).
    assert faults["resident_inside"] - faults["resident_after"] >= 4 * 64, faults


@pytest.mark.skipif(not GLIBC, reason="the host allocator settings are glibc's")
def test_worker_environment_adds_tunables_and_keeps_the_users_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NEURON_KEEP_HOST_MEMORY", raising=False)
    added = host_allocator_environment({})["GLIBC_TUNABLES"].split(":")
    assert added == [f"{name}={value}" for name, value in HOST_ALLOCATOR_TUNABLES]
    users = "glibc.malloc.arena_max=4:glibc.malloc.tcache_count=0"
    merged = host_allocator_environment({"GLIBC_TUNABLES": users})["GLIBC_TUNABLES"].split(":")
    assert merged[:2] == users.split(":")
    assert "glibc.malloc.arena_max=1" not in merged  # the user's value wins
    assert "glibc.malloc.mmap_max=0" in merged
    monkeypatch.setenv("NEURON_KEEP_HOST_MEMORY", "0")
    assert host_allocator_environment({}) == {}
