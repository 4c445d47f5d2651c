"""Helpers for the Slurm tests: waiting on jobs with deadlines, calling the CLI in-process."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
JOB_DEADLINE_S = 150  # no test job may run longer than this; a hang fails instead of blocking CI


def onepiece(*args) -> tuple[int, str, str]:
    """`onepiece ARGS` in this process: (exit code, stdout, stderr)."""
    from onepiece_hpc.cli.main import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def squeue_state(job_id: str) -> str:
    """The job's state as squeue sees it ('' once it has left the queue)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def wait_gone(job_id: str, deadline_s: float = JOB_DEADLINE_S) -> None:
    """Wait until every task of the job has left the queue; fail (and cancel it) past the deadline."""
    end = time.monotonic() + deadline_s
    while squeue_state(job_id):
        if time.monotonic() > end:
            shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30)
            nodes = subprocess.run(["sinfo", "-N", "-h", "-o", "%N %T %E"], capture_output=True, text=True, timeout=30)
            subprocess.run(["scancel", job_id], timeout=30)
            pytest.fail(f"job {job_id} still queued or running after {deadline_s:.0f} s:\n{shown.stdout}"
                        f"\nnodes:\n{nodes.stdout}\n{_log_tail(shown.stdout)}")
        time.sleep(0.5)


def _log_tail(shown: str, lines: int = 60) -> str:
    """The last lines of the job's log, found from `scontrol show job`'s StdOut= (every run of a
    requeued job appends to it), for a failure message."""
    match = re.search(r"StdOut=(\S+)", shown)
    if match is None:
        return "(no log named)"
    try:
        text = Path(match.group(1)).read_text(errors="replace")
    except OSError as err:
        return f"(log {match.group(1)} unreadable: {err.strerror})"
    return f"the job's log, last {lines} lines:\n" + "\n".join(text.splitlines()[-lines:])


def wait_until(condition, what: str, deadline_s: float = JOB_DEADLINE_S, every: float = 0.2):
    end = time.monotonic() + deadline_s
    while not (value := condition()):
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(every)
    return value


def start_now(job_id: str, deadline_s: float = JOB_DEADLINE_S) -> int:
    """Slurm holds a requeued job back for about two minutes (its begin time); let it start now.
    Returns Slurm's restart count of the start that took.

    First wait for the node to be idle again: until slurmd has cleaned up the previous run, the
    job's old credential is still revoked there and a start fails ("Job credential revoked").
    Then wait until the job's batch script runs here. A launch can still fail under load (slurmd
    too busy to take it in time): Slurm then requeues the job itself, held back again, and this
    lets it start once more.
    """
    def node_idle() -> bool:
        state = subprocess.run(["sinfo", "-h", "-n", "n1", "-o", "%T"], capture_output=True, text=True,
                               timeout=30).stdout.strip()
        return state == "idle"

    end = time.monotonic() + deadline_s
    while True:
        restarts = _restarts(job_id)
        wait_until(node_idle, "the node to be idle after the requeue", 90)
        time.sleep(2.0)
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, timeout=30)
        while True:
            if job_processes(job_id) or not squeue_state(job_id):
                return restarts
            if _restarts(job_id) > restarts:
                break  # its launch failed and Slurm requeued it: start it again
            if time.monotonic() > end:
                shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30)
                pytest.fail(f"job {job_id} did not start within {deadline_s:.0f} s:\n{shown.stdout}")
            time.sleep(0.2)


def _restarts(job_id: str) -> int:
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"Restarts=(\d+)", shown)
    return int(match.group(1)) if match else 0


def job_processes(job_id: str, task: int | None = None) -> list[int]:
    """Pids of this host's processes of a job: the batch script (task None), or the step's task
    of that rank. Read from /proc (the tests run as root, beside the local cluster's only node)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (entry / "environ").read_bytes().decode(errors="replace")
                       .split("\0") if "=" in item)
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if env.get("SLURM_JOB_ID") != job_id:
            continue
        if task is None and any(a.endswith("/slurm_script") for a in argv[:2]):
            found.append(int(entry.name))
        elif task is not None and env.get("SLURM_PROCID") == str(task) and "onepiece_hpc.runtime.rank_main" in argv:
            found.append(int(entry.name))
    if task is None:  # the script's $(...) subshells have its command line too: keep the script itself
        found = [pid for pid in found if _parent(pid) not in found]
    return found


def _parent(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return -1
    return int(next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), -1))


def accounting(job_id: str) -> str:
    """sacct's "STATE|EXIT:SIGNAL" of the job ("" until it is recorded)."""
    done = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode"], capture_output=True,
                          text=True, timeout=30)
    return done.stdout.strip().split()[0] if done.stdout.strip() else ""


def log_says(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")


def wait_requeued(job_id: str, deadline_s: float = JOB_DEADLINE_S) -> None:
    """Until Slurm holds the job again after a requeue (pending, or requeued on its way there)."""
    wait_until(lambda: squeue_state(job_id) in ("PENDING", "REQUEUED", "REQUEUE_HOLD"), f"job {job_id} to be requeued",
               deadline_s)


def stop_process(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
