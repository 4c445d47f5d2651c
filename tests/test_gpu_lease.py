"""The GPU lease (runtime/gpu_lease.py): one holder at a time across processes, a killed holder
lets go, the file is private and goes with its creator, and a bad name is refused."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from onepiece_hpc.runtime.gpu_lease import GpuLease, LeaseError

pytestmark = pytest.mark.timeout(60)

HOLDER = """
import sys, time
from onepiece_hpc.runtime.gpu_lease import GpuLease
lease = GpuLease.join(sys.argv[1])
assert lease.try_take()
print("held", flush=True)
time.sleep(600)
"""


def _holder(name: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, name], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_one_holder_at_a_time_and_a_killed_holder_lets_go():
    lease = GpuLease.create()
    try:
        assert stat.S_IMODE(os.stat(lease.path).st_mode) == 0o600
        child = _holder(lease.name)
        try:
            assert not lease.try_take()  # the other process holds the GPU
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            deadline = time.monotonic() + 10
            while not lease.try_take():
                assert time.monotonic() < deadline, "the killed holder's lease was never released"
                time.sleep(0.05)
            assert lease.held and lease.turns == 1
        finally:
            child.kill()
            child.wait(timeout=10)
    finally:
        lease.close()
    assert not os.path.exists(lease.path)


def test_a_holder_that_gives_back_lets_the_next_take_it():
    first = GpuLease.create()
    second = GpuLease.join(first.name)
    try:
        assert first.try_take() and first.try_take()  # taking it again while held is a no-op
        assert not second.try_take()
        first.give_back()
        assert second.try_take()
        assert not first.try_take()
    finally:
        second.close()
        first.close()


@pytest.mark.parametrize("name", ["../etc/passwd", "onepiece-1-x/../../y", "someone-else", ""])
def test_a_name_that_is_not_a_lease_is_refused(name):
    with pytest.raises(LeaseError):
        GpuLease.join(name)


def test_a_lease_whose_file_is_gone_says_so():
    lease = GpuLease.create()
    lease.close()
    with pytest.raises(LeaseError, match="cannot open the GPU lease"):
        GpuLease.join(lease.name)
