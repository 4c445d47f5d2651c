"""A workflow run killed with kill -9 midway, then run again: every item ends in the output exactly
once (videos and kept images), bit-identical to an uninterrupted run, and intact."""

from __future__ import annotations

import re
import signal

import numpy as np
import pytest

from chaos import Cut, strike
from support import done_count, invoke, run_cli, running, runs_of, wait_until
from workflow_support import outputs_of, workflow_job

pytestmark = [pytest.mark.mpi, pytest.mark.slow, pytest.mark.timeout(600)]

PROMPTS = [f"workflow item {i}: a {c} boat at dawn" for i, c in enumerate(
    ["red", "blue", "green", "white", "black", "tiny", "huge", "round", "tall", "old", "new", "wet"])]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """The job's kept images and videos, run whole in one process, once for the tests here."""
    job = workflow_job(tmp_path_factory.mktemp("whole"), PROMPTS)
    assert invoke("run", job, "--monolithic").code == 0
    return outputs_of(job.parent / "out/t.h5")


def _check_resumed(output, kept: int, stdout: str, reference) -> None:
    summary = re.search(r"(\d+)/(\d+) items done \((\d+) this run", stdout)
    assert summary is not None, stdout
    assert [int(n) for n in summary.groups()] == [len(PROMPTS), len(PROMPTS), len(PROMPTS) - kept], \
        "the rerun makes exactly the items the killed run had not committed"
    for found, expected in zip(outputs_of(output), reference):
        np.testing.assert_array_equal(found, expected)
    runs = runs_of(output)
    assert [run["status"] for run in runs] == ["running", "completed"], "the killed run never closed its record"
    assert int(runs[1]["items_committed"]) == len(PROMPTS) - kept
    verified = run_cli("verify", output)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_staged_workflow_killed_midway_resumes_every_item_once(tmp_path, uninterrupted):
    job = workflow_job(tmp_path, PROMPTS)
    output = tmp_path / "out/t.h5"
    struck = strike(job, Cut("tree", ranks=7, items=2))  # mpiexec, every rank and the launcher, kill -9
    assert struck.struck and not struck.failure, struck.failure
    kept = done_count(output)
    assert 2 <= kept < len(PROMPTS), f"{kept} items were committed before the kill"
    again = run_cli("run", job, "-n", "7", "--wait-timeout", "120", timeout=500)
    assert again.returncode == 0, again.stderr[-3000:]
    _check_resumed(output, kept, again.stdout, uninterrupted)


def test_a_one_process_workflow_killed_midway_resumes_every_item_once(tmp_path, uninterrupted):
    # the one-process run takes about 1.5 s for the 12 items: its done flags are published every
    # 50 ms instead of every second, so that the poll below sees some but not all of them
    job = workflow_job(tmp_path, PROMPTS, extra="store: {sync_interval_s: 0.05}\n")
    output = tmp_path / "out/t.h5"
    with running("run", job, "--monolithic") as proc:
        wait_until(proc, lambda: 2 <= done_count(output) < len(PROMPTS) - 3, "a few committed items")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    kept = done_count(output)
    again = run_cli("run", job, "--monolithic")
    assert again.returncode == 0, again.stderr[-3000:]
    _check_resumed(output, kept, again.stdout, uninterrupted)
