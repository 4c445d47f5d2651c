"""The writer's lock (store/lock.py): a live holder refuses, a provably ended one is taken over,
and of processes racing for a stale lock exactly one wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from onepiece_hpc.errors import UserError
from onepiece_hpc.store.lock import (
    STALE_AFTER_S,
    Holder,
    WriterLock,
    myself,
    process_started,
)

from support import REPO

RACERS = 8
RACE_TIMEOUT_S = 60


@pytest.fixture
def sleeper():
    """A real live process, other than this one, that a lock record can name."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def plant(lock: Path, holder: Holder, age_s: float = 0.0) -> None:
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps(asdict(holder)), encoding="utf-8")
    if age_s:
        then = time.time() - age_s
        os.utime(lock, (then, then))


def holds(lock: Path, holder: Holder) -> bool:
    return json.loads(lock.read_text(encoding="utf-8")) == asdict(holder)


def me() -> Holder:
    return myself("monolithic", "", 0)


def other_process(pid: int, **changes) -> Holder:
    """A record for `pid` on this host and boot, as the lock's own code would write it."""
    return replace(me(), pid=pid, pid_started=process_started(pid), mode="staged", **changes)


def test_live_holder_refuses_naming_host_and_pid(tmp_path, sleeper):
    lock = tmp_path / "out.h5.d/lock"
    holder = other_process(sleeper.pid)
    plant(lock, holder)
    with pytest.raises(UserError) as caught:
        WriterLock.acquire(lock, me(), tmp_path / "out.h5")
    message = caught.value.render()
    assert caught.value.exit_code == 2
    assert f"pid {sleeper.pid} on {holder.host}" in message and str(lock) in message
    assert holds(lock, holder), "a refused acquire changed the live holder's lock"


@pytest.mark.parametrize("case", ["dead pid", "pid reused", "other boot", "slurm requeue", "old heartbeat"])
def test_provably_ended_holder_is_taken_over(tmp_path, sleeper, case):
    lock = tmp_path / "out.h5.d/lock"
    ours = me()
    age = 0.0
    if case == "dead pid":
        stale = other_process(dead_pid())
    elif case == "pid reused":  # the pid lives, but its start time is not the holder's
        stale = replace(other_process(sleeper.pid), pid_started=str(int(process_started(sleeper.pid)) - 1))
    elif case == "other boot":  # this host, rebooted since: every pid of the record is gone
        stale = replace(other_process(sleeper.pid), boot_id="another-boot-of-this-host")
    elif case == "slurm requeue":  # this job, an earlier incarnation on another node
        stale = Holder("node-017", "a-boot", 4242, "99", "812345", 0, time.time(), "staged")
        ours = replace(ours, slurm_job="812345", slurm_restart=1)
    else:  # another host that has not refreshed the lock for longer than STALE_AFTER_S
        stale = Holder("node-017", "a-boot", 4242, "99", "", 0, time.time() - 2 * STALE_AFTER_S, "staged")
        age = STALE_AFTER_S + 60
    plant(lock, stale, age)
    taken = WriterLock.acquire(lock, ours, tmp_path / "out.h5")
    try:
        assert holds(lock, ours)
        assert not list(lock.parent.glob(".stale-lock.*")) and not (lock.parent / "lock.takeover").exists()
    finally:
        taken.release()
    assert not lock.exists()


def test_other_host_with_fresh_heartbeat_refuses(tmp_path):
    lock = tmp_path / "out.h5.d/lock"
    holder = Holder("node-017", "a-boot", 4242, "99", "", 0, time.time() - 3600, "staged")
    plant(lock, holder)  # touched just now: its holder may be alive
    with pytest.raises(UserError) as caught:
        WriterLock.acquire(lock, me(), tmp_path / "out.h5")
    assert "pid 4242 on node-017" in caught.value.render()
    assert holds(lock, holder)


def test_requeue_does_not_take_over_a_later_incarnation(tmp_path):
    lock = tmp_path / "out.h5.d/lock"
    holder = Holder("node-017", "a-boot", 4242, "99", "812345", 2, time.time(), "staged")
    plant(lock, holder)
    with pytest.raises(UserError):
        WriterLock.acquire(lock, replace(me(), slurm_job="812345", slurm_restart=1), tmp_path / "out.h5")
    assert holds(lock, holder)


@pytest.mark.parametrize("text", ["", "not json at all", "{\"host\": \"x\"}", "[1, 2, 3]", "\x00\xff garbage"])
def test_garbage_lock_is_refused_naming_it(tmp_path, text):
    lock = tmp_path / "out.h5.d/lock"
    lock.parent.mkdir(parents=True)
    lock.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(UserError) as caught:
        WriterLock.acquire(lock, me(), tmp_path / "out.h5")
    assert str(lock) in caught.value.render() and caught.value.exit_code == 2
    assert lock.read_bytes() == text.encode("utf-8", "surrogateescape")


RACER = """
import sys, time
from pathlib import Path
from onepiece_hpc.errors import UserError
from onepiece_hpc.store.lock import WriterLock, myself
lock, go, release = map(Path, sys.argv[1:4])
while not go.exists():
    time.sleep(0.001)
try:
    held = WriterLock.acquire(lock, myself("racer", "", 0), lock.parent)
except UserError as err:
    print("refused", str(err).splitlines()[0], flush=True)
    sys.exit(0)
print("won", flush=True)
while not release.exists():
    time.sleep(0.01)
held.release()
"""


def test_racing_take_overs_of_one_stale_lock_have_exactly_one_winner(tmp_path):
    lock = tmp_path / "out.h5.d/lock"
    plant(lock, other_process(dead_pid()))
    go, release = tmp_path / "go", tmp_path / "release"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    racers = [subprocess.Popen([sys.executable, "-c", RACER, lock, go, release], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env) for _ in range(RACERS)]
    try:
        time.sleep(1.0)  # let every racer import and wait at the start line
        go.touch()
        deadline = time.monotonic() + RACE_TIMEOUT_S
        while sum(p.poll() is not None for p in racers) < RACERS - 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        finished = [p for p in racers if p.poll() is not None]
        assert len(finished) >= RACERS - 1, "racers still undecided after the deadline"
        release.touch()
        results = [p.communicate(timeout=RACE_TIMEOUT_S) for p in racers]
    finally:
        release.touch()
        for p in racers:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    outcomes = [(out.split() or ["nothing"])[0] for out, _ in results]
    assert outcomes.count("won") == 1, [(out, err[-500:]) for out, err in results]
    assert all(p.returncode == 0 for p in racers), [err[-500:] for _, err in results]
    assert not lock.exists(), "the winner released its lock"
