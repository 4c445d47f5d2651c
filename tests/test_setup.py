"""A staged run's set-up: rank 0 alone plans; every rank agrees or the job stops at once with one
message naming the rank, host and cause; no MPI wait lasts past its deadline.

The ranks here are started by mpiexec directly, with its MPMD form (`-n 1 A : -n 1 B`), to give
one rank another job file, another environment or another program than the rest: what a
misconfigured node does to a real job.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


from onepiece_hpc.runtime.launch import find_mpiexec

from support import error_lines, write_job

PROMPTS = [f"a test prompt number {i}" for i in range(6)]
RANK = [sys.executable, "-m", "onepiece_hpc.runtime.rank_main"]
BOUND_S = 150  # no test here may take longer: a hang fails


def mpmd(*groups: list[str], env: dict | None = None, timeout: float = BOUND_S) -> tuple[subprocess.CompletedProcess, float]:
    """Run mpiexec with one group of ranks per argument list: (count, argv...) each."""
    launcher = find_mpiexec()
    command = launcher.command(0, [], as_root=os.geteuid() == 0)[:-2]  # the launcher and its flags, no -n
    for count, *argv in groups:
        command += ["-n", str(count), *argv, ":"]
    started = time.monotonic()
    proc = subprocess.run(command[:-1], capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy())
    return proc, time.monotonic() - started


def _job(folder, **fields):
    return write_job(folder, PROMPTS, output=str(folder.parent / "out.h5"), **fields)


def test_a_rank_whose_set_up_fails_is_named_and_every_rank_ends(tmp_path):
    job = _job(tmp_path / "job")
    proc, seconds = mpmd([3, *RANK, str(job)], [1, *RANK, str(tmp_path / "missing.yaml")])
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr[-3000:]
    assert f"set-up failed on rank 3 on {socket.gethostname()}: " in errors[0]
    assert "missing.yaml: job file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.h5").exists()
    assert seconds < 60


def test_ranks_that_would_run_different_jobs_are_refused(tmp_path):
    job = _job(tmp_path / "job")
    other = _job(tmp_path / "other", params="{steps: 3, guidance: 5.0, height: 64, width: 64}")
    proc, _ = mpmd([2, *RANK, str(job)], [1, *RANK, str(other)], [1, *RANK, str(job)])
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "rank 2 on" in errors[0] and "would run another job than rank 0" in errors[0]
    assert "job file:" in errors[0] and "fix:" in errors[0]
    assert "rank 1 on" not in errors[0] and "rank 3 on" not in errors[0]


def test_a_rank_that_never_joins_ends_the_others_at_their_deadline(tmp_path):
    """A rank that started MPI but never takes part (a stuck node, another program): the collectives
    the others wait in have a deadline, and the job ends saying what it waited for."""
    job = _job(tmp_path / "job")
    stuck = [sys.executable, "-c", "from mpi4py import MPI; import time; time.sleep(300)"]
    proc, seconds = mpmd([3, *RANK, str(job), "--wait-timeout", "10"], [1, *stuck])
    assert proc.returncode != 0
    assert "no progress within 10 s while exchanging every rank's host and pid" in proc.stderr, proc.stderr[-3000:]
    assert seconds < 90


def test_mpi_without_thread_support_is_refused_with_the_fix(tmp_path):
    job = _job(tmp_path / "job")
    env = os.environ | {"MPI4PY_RC_THREAD_LEVEL": "serialized"}
    proc, _ = mpmd([4, *RANK, str(job)], env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "MPI_THREAD_SERIALIZED" in errors[0] and "MPI_THREAD_MULTIPLE" in errors[0] and "fix:" in errors[0]


def test_a_stage_rank_s_set_up_reads_no_prompts_and_hashes_no_weights(tmp_path, model_cache):
    """What a stage rank prepares: the job file, model and device are checked, the prompt file is not
    opened (here it does not exist) and the weights are not hashed (no identity)."""
    from onepiece_hpc.runtime.prepare import prepare

    job = _job(tmp_path / "job")
    (tmp_path / "job" / "prompts.txt").unlink()
    prepared = prepare(job, None, model_cache, plan=False)
    assert prepared.plan is None and len(prepared.job.records) == 0
    assert prepared.model.identity == "" and prepared.model.config_hash
