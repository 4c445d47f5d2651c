"""Helpers for the Slurm tests: waiting on jobs with deadlines, calling the CLI in-process."""

from __future__ import annotations

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
            subprocess.run(["scancel", job_id], timeout=30)
            pytest.fail(f"job {job_id} still queued or running after {deadline_s:.0f} s")
        time.sleep(0.5)


def wait_until(condition, what: str, deadline_s: float = JOB_DEADLINE_S, every: float = 0.2):
    end = time.monotonic() + deadline_s
    while not (value := condition()):
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(every)
    return value


def start_now(job_id: str) -> None:
    """Slurm holds a requeued job back for about two minutes (its begin time); let it start now.

    First wait for the node to be idle again: until slurmd has cleaned up the previous run, the
    job's old credential is still revoked there and a start fails ("Job credential revoked").
    """
    def node_idle() -> bool:
        state = subprocess.run(["sinfo", "-h", "-n", "n1", "-o", "%T"], capture_output=True, text=True,
                               timeout=30).stdout.strip()
        return state == "idle"

    wait_until(node_idle, "the node to be idle after the requeue", 90)
    time.sleep(2.0)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, timeout=30)
