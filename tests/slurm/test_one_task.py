"""A one-task job's run (slurm/one_task.py), drained as the batch script drains it: started with
the drain signal ignored, then sent it every so often until it ends. No cluster needed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import runs_of
from test_cluster import QUICK, SLOW, done_count, slow_job

pytestmark = pytest.mark.timeout(240)


def _start(job: Path, output: Path) -> subprocess.Popen:
    """As the batch script starts it: the drain signal and SIGTERM ignored until its handlers are in place."""
    return subprocess.Popen(["/bin/bash", "-c", 'trap "" USR1 TERM; exec "$@"', "one-task", sys.executable, "-m",
                             "onepiece_hpc.slurm.one_task", "--drain-signal", "USR1", str(job), "--output", str(output)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _drain(proc: subprocess.Popen, deadline_s: float = 120.0) -> tuple[int, str]:
    """As the batch script does: a moment after the start, then USR1 each 0.2 s (the script: each
    second) until the run ends."""
    end = time.monotonic() + deadline_s
    time.sleep(1.0)
    while proc.poll() is None:
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"the one-task run did not stop within {deadline_s:.0f} s of its drain signal")
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
    return proc.returncode, proc.stderr.read()


def _wait_commit(proc: subprocess.Popen, output: Path, deadline_s: float = 120.0) -> None:
    end = time.monotonic() + deadline_s
    while done_count(output) < 1:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < end, "no item committed in time"
        time.sleep(0.1)


def test_a_drained_one_task_run_exits_3_after_progress_and_5_without(tmp_path):
    job = slow_job(tmp_path, "ntasks_per_node: 1")
    early = tmp_path / "early.h5"
    code, err = _drain(_start(job, early))  # the drain lands while it starts: nothing committed
    assert code == 5, err
    assert "before this run committed anything" in err
    assert not early.exists() or all(int(run["items_committed"]) == 0 for run in runs_of(early))

    output = tmp_path / "late.h5"
    proc = _start(job, output)
    _wait_commit(proc, output)
    code, err = _drain(proc)
    assert code == 3, err
    runs = runs_of(output)
    assert len(runs) == 1 and 0 < int(runs[0]["items_committed"]) < QUICK + SLOW
    assert f"{runs[0]['items_committed']} items committed by this run are kept" in err
    assert json.dumps(runs[0]["status"]) in ('"terminated"', '"interrupted"')
