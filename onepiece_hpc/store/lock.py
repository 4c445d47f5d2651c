"""The writer's lock: one writer per output, on any POSIX file system, across nodes.

flock is advisory, often off on Lustre and NFS (HDF5_USE_FILE_LOCKING=FALSE), and node-local
under some mount options, so the lock is a file of our own: a JSON record naming the holder
(host, boot, pid and its start time, Slurm job and restart count), published with link(2) so
exactly one process can create it, and touched by the holder every HEARTBEAT_S seconds.

A lock is stale, and taken over, when its holder provably ended:
- same host and boot: the pid is gone, or now belongs to another process (start time differs);
- the holder was a Slurm job: it is this job in an earlier incarnation (a requeue: same job
  id, lower restart count), or Slurm no longer lists that job as alive;
- otherwise: its heartbeat is older than STALE_AFTER_S.
Taking over is serialised by a second, short-lived lock, so two processes that both judge a
lock stale can't both win.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.store.files import AlreadyThere, temporary_path, write_new

log = logging.getLogger(__name__)

HEARTBEAT_S = 20.0
STALE_AFTER_S = 300.0
BREAK_STALE_AFTER_S = 60.0  # a take-over lock this old was left by a killed process
SLURM_ALIVE = {"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "RESIZING", "REQUEUED",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"}


@dataclass(frozen=True)
class Holder:
    """Who holds a lock (or asks for one)."""

    host: str
    boot_id: str
    pid: int
    pid_started: str  # the process's start time in clock ticks since boot (/proc/PID/stat field 22)
    slurm_job: str    # "" outside Slurm; an array task is JOBID_TASK
    slurm_restart: int
    since: float      # time.time() when it took the lock
    mode: str

    def describe(self) -> str:
        job = f", Slurm job {self.slurm_job}" if self.slurm_job else ""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host}{job} ({self.mode}, since {started})"


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def process_started(pid: int) -> str:
    """A process's start time (clock ticks since boot), '' if it is not there."""
    stat = _read_text(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[-1].split()[19] if stat else ""


def myself(mode: str, slurm_job: str, slurm_restart: int) -> Holder:
    pid = os.getpid()
    return Holder(host=socket.gethostname(), boot_id=_read_text("/proc/sys/kernel/random/boot_id"), pid=pid,
                  pid_started=process_started(pid), slurm_job=slurm_job, slurm_restart=slurm_restart,
                  since=time.time(), mode=mode)


def _parse(text: str) -> Holder | None:
    try:
        record = json.loads(text)
        return Holder(**{name: type(default)(record[name]) for name, default in asdict(_EMPTY).items()})
    except (ValueError, KeyError, TypeError):
        return None


_EMPTY = Holder("", "", 0, "", "", 0, 0.0, "")


def _slurm_alive(job: str) -> bool | None:
    """Whether Slurm lists the job as alive; None where Slurm can't be asked."""
    try:
        result = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return False if "Invalid job id" in result.stderr else None
    states = set(result.stdout.split())
    return bool(states & SLURM_ALIVE)


def stale_reason(holder: Holder, me: Holder, heartbeat_age: float) -> str | None:
    """Why the lock of `holder` can be taken over by `me`, or None if its holder may be alive."""
    if holder.host == me.host and holder.boot_id and holder.boot_id == me.boot_id:
        started = process_started(holder.pid)
        if not started:
            return f"its process {holder.pid} on {holder.host} is gone"
        if started != holder.pid_started:
            return f"pid {holder.pid} on {holder.host} is now another process"
        return None
    if holder.host == me.host and holder.boot_id and holder.boot_id != me.boot_id:
        return f"{holder.host} has rebooted since"
    if holder.slurm_job:
        if holder.slurm_job == me.slurm_job and holder.slurm_restart < me.slurm_restart:
            return f"Slurm requeued job {holder.slurm_job} since (restart {holder.slurm_restart} -> {me.slurm_restart})"
        if holder.slurm_job != me.slurm_job and _slurm_alive(holder.slurm_job) is False:
            return f"Slurm job {holder.slurm_job} has ended"
    if heartbeat_age > STALE_AFTER_S:
        return f"its holder has not refreshed it for {heartbeat_age:.0f} s"
    return None


class WriterLock:
    """The lock at `path`, held until release(); a thread refreshes its heartbeat."""

    def __init__(self, path: Path, holder: Holder) -> None:
        self.path = path
        self.holder = holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lock-heartbeat", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, path: Path, me: Holder, output: Path) -> WriterLock:
        """Take the lock, taking over a stale one; raise UserError naming a live holder."""
        for _ in range(3):
            try:
                write_new(path, lambda tmp: tmp.write_text(json.dumps(asdict(me)), encoding="utf-8"))
                return cls(path, me)
            except AlreadyThere:
                pass
            text, age = _current(path)
            if text is None:
                continue  # released between our attempt and our look: try again
            holder = _parse(text)
            if holder is None:
                raise UserError(f"{path} is not a lock onepiece wrote, so {output} may be in use by something "
                                f"else; fix: remove {path} if nothing writes {output}")
            reason = stale_reason(holder, me, age)
            if reason is None:
                raise UserError(f"{output} is being written by {holder.describe()}; its lock {path} was refreshed "
                                f"{age:.0f} s ago; nothing was changed; fix: wait for that run to finish (or stop "
                                "it), or choose another output path")
            _take_over(path, text, reason)
        raise UserError(f"{output}: could not take its lock {path} (others kept taking it); fix: make sure one "
                        "run writes this output, then try again")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass  # a full disk or a vanished folder: the run's own writes will say so

    def release(self) -> None:
        self._stop.set()
        text, _ = _current(self.path)
        if text is not None and _parse(text) == self.holder:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _current(path: Path) -> tuple[str | None, float]:
    """The lock's text and the seconds since its heartbeat, or (None, 0) if there is none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            age = time.time() - os.fstat(handle.fileno()).st_mtime
            return handle.read(), age
    except FileNotFoundError:
        return None, 0.0


def _remove_abandoned(guard: Path) -> None:
    """Remove a take-over guard that a killed process left (older than BREAK_STALE_AFTER_S), but only the
    one judged old: a guard another process has just made in its place (another inode, or touched since)
    stays."""
    try:
        judged = guard.lstat()
    except FileNotFoundError:
        return
    if time.time() - judged.st_mtime <= BREAK_STALE_AFTER_S:
        return
    try:
        now = guard.lstat()
        if (now.st_ino, now.st_mtime_ns) == (judged.st_ino, judged.st_mtime_ns):
            guard.unlink()
    except FileNotFoundError:
        pass


def _take_over(path: Path, stale_text: str, reason: str) -> None:
    """Remove the stale lock if it is still the one we judged; one process at a time does this."""
    guard = path.with_name(path.name + ".takeover")
    _remove_abandoned(guard)
    try:
        write_new(guard, lambda tmp: tmp.write_text(str(os.getpid()), encoding="utf-8"))
    except AlreadyThere:
        time.sleep(0.2)
        return
    try:
        text, _ = _current(path)
        if text == stale_text:
            with temporary_path(path.parent, ".stale-lock.") as moved:
                os.replace(path, moved)  # the stale lock goes away under a private name
            log.warning("took over the stale lock %s: %s", path, reason)
    finally:
        guard.unlink(missing_ok=True)
