"""The one process check: live, exited, zombie, and a process we may not signal."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from onepiece_hpc.processes import process_alive


def test_this_process_is_alive_and_nonsense_pids_are_not():
    assert process_alive(os.getpid())
    assert not process_alive(0) and not process_alive(-1)


def test_a_zombie_counts_as_dead_and_a_reaped_child_too():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while process_alive(child.pid):  # exited, not yet reaped: a zombie
        assert time.monotonic() < deadline, "a zombie was reported alive"
        time.sleep(0.05)
    child.wait()
    assert not process_alive(child.pid)


@pytest.mark.skipif(not os.path.exists("/proc/1/stat"), reason="no /proc on this system")
def test_init_is_alive_whoever_asks():
    # pid 1 runs as root: a root caller may signal it, any other gets PermissionError; alive either way
    assert process_alive(1)


def test_another_users_process_is_alive_even_when_it_may_not_be_signalled(monkeypatch):
    def refuse(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refuse)
    assert process_alive(os.getpid())
