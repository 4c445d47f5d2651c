"""End to end on a real local Slurm: submit, sweep arrays + merge, scancel + resubmit, drains
(SIGTERM alone and requeue, the drain signal and a chained successor, no progress and no requeue,
a signal before the run starts, the submitit API), hostile strings, and a failing srun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from support import runs_of
from slurm_helpers import (
    REPO, accounting, job_processes, log_says, onepiece, squeue_state, start_now, stop_process, wait_gone, wait_requeued,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)

PROMPTS = [f"a lighthouse on a cliff, study {i}" for i in range(12)]


def write(folder: Path, body: str, prompts: list[str], name: str = "job.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    (folder / name).write_text(body, encoding="utf-8")
    return folder / name


STAGED = """name: staged
model: builtin:tiny-sd
prompts: prompts.txt
params: {steps: 16, guidance: 5.0, height: 64, width: 64}
seed: 11
device: cpu
output: out/staged.h5
slurm: {ntasks_per_node: 4, time: "10:00", drain_seconds: 30, mpi: pmi2}
"""
#: two quick items first (the first commits come fast), then slow ones: a signal sent after the
#: first commit lands while most units are not even dispatched, however loaded the machine is
#: (in flight at once: about five units, whatever their cost)
QUICK, SLOW = 2, 16
SLOW_STEPS = 32


def slow_job(folder: Path, slurm: str = "", name: str = "job.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"prompt": f"a lighthouse on a cliff, study {i}", **({"steps": 2} if i < QUICK else {})}
             for i in range(QUICK + SLOW)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    body = STAGED.replace("prompts.txt", "prompts.jsonl").replace("steps: 16", f"steps: {SLOW_STEPS}")
    if slurm:
        body = body.replace("mpi: pmi2}", f"mpi: pmi2, {slurm}}}")
    (folder / name).write_text(body, encoding="utf-8")
    return folder / name


@pytest.fixture(scope="module")
def staged_job(tmp_path_factory):
    """A 4-task job with slow units, and its uninterrupted output (the monolithic reference)."""
    folder = tmp_path_factory.mktemp("staged")
    job = slow_job(folder)
    reference = folder / "reference.h5"
    code, _, err = onepiece("run", job, "--monolithic", "-o", reference)
    assert code == 0, err
    return job, reference


def wait_commits(output: Path, job_id: str, count: int = 1) -> None:
    """Until `count` items are committed; fails at once if the job has left the queue before."""
    def committed() -> bool:
        if done_count(output) >= count:
            return True
        if not squeue_state(job_id):
            pytest.fail(f"job {job_id} ended before committing {count} item(s); see its log")
        return False

    wait_until(committed, f"{count} committed item(s)")


def submit(*args) -> str:
    code, out, err = onepiece("submit", *args)
    assert code == 0, err
    return out.strip().splitlines()[0]


def done_count(output: Path) -> int:
    if not output.exists():
        return 0
    try:
        with h5py.File(output, "r", locking=False) as file:
            return int(file["done"][...].sum())
    except OSError:
        return 0  # still being created


def assert_same_complete_output(output: Path, reference: Path) -> None:
    with h5py.File(output, "r", locking=False) as got, h5py.File(reference, "r", locking=False) as want:
        assert got["done"][...].all()
        keys = got["items"]["key"][...]
        assert len(set(keys)) == len(keys) == want.attrs["items_total"]
        assert np.array_equal(keys, want["items"]["key"][...])
        assert np.array_equal(got["outputs/images"][...], want["outputs/images"][...])


def test_submit_tiny_job_completes_and_keeps_its_script(slurm_cluster, tmp_path):
    output = tmp_path / "tiny.h5"
    job_id = submit(REPO / "jobs" / "tiny.yaml", "-o", output)
    wait_gone(job_id)
    code, out, err = onepiece("inspect", output, "--json")
    assert code == 0, err
    assert json.loads(out)["complete"]
    folder = tmp_path / "tiny.slurm"
    assert (folder / f"{job_id}.log").exists() and list(folder.glob("job-*.sbatch"))
    info = wait_until(lambda: (s := json.loads(onepiece("status", job_id, "--json")[1]))["state"] == "COMPLETED"
                      and s, "sacct to record the job as COMPLETED", 30)
    assert info["items_done"] == info["items_total"] == 8


SWEEP = """name: sw
model: builtin:tiny-sd
prompts: prompts.txt
params: {steps: 2, height: 64, width: 64}
device: cpu
grid:
  guidance: [3.0, 7.5]
  seed: [0, 100, 200]
output: out
slurm: {ntasks_per_node: 1, time: "10:00"}
"""


def test_sweep_runs_as_arrays_and_merges_into_one_view(slurm_cluster, tmp_path):
    sweep = write(tmp_path, SWEEP, PROMPTS[:3], "sweep.yaml")
    code, out, err = onepiece("sweep", sweep)
    assert code == 0, err
    ids = out.split()
    assert len(ids) == 2  # 6 shards, MaxArraySize 4 on the local cluster: two arrays (4 + 2 tasks)
    for job_id in ids:
        wait_gone(job_id)
    shards = sorted((tmp_path / "out").glob("*.h5"))
    assert len(shards) == 6
    code, out, err = onepiece("merge", tmp_path / "out", "-o", tmp_path / "merged.h5")
    assert code == 0, err
    code, out, err = onepiece("inspect", tmp_path / "merged.h5", "--json")
    info = json.loads(out)
    assert (info["items_total"], info["items_done"], info["complete"]) == (18, 18, True)
    with h5py.File(tmp_path / "merged.h5", "r") as merged:
        keys = merged["items"]["key"][...]
        offsets = merged["merge/sources"]["offset"][...]
        assert len(set(keys)) == 18 and list(offsets) == [0, 3, 6, 9, 12, 15]
        assert list(merged["items"]["index"][...]) == [0, 1, 2] * 6  # each row as its shard numbers it
        for number, shard in enumerate(shards):
            with h5py.File(shard, "r") as part:
                assert np.array_equal(merged["outputs/images"][number * 3:(number + 1) * 3], part["outputs/images"][...])
    code, _, err = onepiece("export", tmp_path / "merged.h5", tmp_path / "pngs")
    assert code == 0, err
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 18
    status = json.loads(onepiece("status", ids[0], "--json")[1])
    assert (status["items_done"], status["items_total"]) == (12, 12)


def test_scancel_midway_then_submit_again_resumes_exactly_once(slurm_cluster, staged_job, tmp_path):
    job, reference = staged_job
    output = tmp_path / "cancelled.h5"
    first = submit(job, "-o", output)
    wait_commits(output, first, QUICK)
    subprocess.run(["scancel", first], check=True, timeout=30)
    wait_gone(first)
    assert QUICK <= done_count(output) < QUICK + SLOW
    log = (tmp_path / "cancelled.slurm" / f"{first}.log").read_text()
    assert "requeueing" not in log  # scancel's SIGTERM drains the run, but a cancelled job stays cancelled
    second = submit(job, "-o", output)
    wait_gone(second)
    assert_same_complete_output(output, reference)


def assert_drained_then_completed_once(output: Path, reference: Path) -> None:
    """The first run drained after committing some (not all) items; one more run completed it."""
    runs = runs_of(output)
    assert [run["status"] for run in runs] == ["preempted", "completed"], runs
    assert 0 < int(runs[0]["items_committed"]) < QUICK + SLOW
    assert int(runs[0]["items_committed"]) + int(runs[1]["items_committed"]) == QUICK + SLOW
    assert_same_complete_output(output, reference)


def test_sigterm_alone_drains_requeues_once_and_the_requeued_job_finishes(slurm_cluster, staged_job, tmp_path):
    """A site that sends only SIGTERM (to the step's tasks, as a preemption does): rank 0 drains,
    the other ranks outlive it, the job is requeued exactly once and ends complete."""
    job, reference = staged_job
    output = tmp_path / "preempted.h5"
    job_id = submit(job, "-o", output)
    wait_commits(output, job_id)
    subprocess.run(["scancel", "--signal=TERM", job_id], check=True, timeout=30)
    wait_requeued(job_id, 90)
    log = tmp_path / "preempted.slurm" / f"{job_id}.log"
    assert log_says(log, "rank 0: SIGTERM: draining") and log_says(log, "requeueing job")
    restarts = start_now(job_id)  # 1, or more where Slurm requeued a launch that failed under load
    wait_gone(job_id)
    assert log.read_text(errors="replace").count("requeueing job") == 1
    assert_drained_then_completed_once(output, reference)
    assert [int(run["slurm_restart"]) for run in runs_of(output)] == [0, restarts]


def test_the_drain_signal_with_requeue_chain_hands_over_to_a_successor_job(slurm_cluster, staged_job, tmp_path):
    """slurm.drain_signal: USR2, slurm.requeue: chain (no scontrol requeue): the drained job
    submits a successor of the same script and arguments, which starts once it has ended."""
    _, reference = staged_job
    job = slow_job(tmp_path, "drain_signal: USR2, requeue: chain")
    output = tmp_path / "chained.h5"
    first = submit(job, "-o", output)
    wait_commits(output, first)
    subprocess.run(["scancel", "--signal=USR2", "--batch", first], check=True, timeout=30)  # as --signal=B:USR2@N
    log = tmp_path / "chained.slurm" / f"{first}.log"
    said = wait_until(lambda: re.search(r"submitted job (\d+) to resume once job", log.read_text()), "the successor")
    successor = said.group(1)
    wait_gone(first)
    wait_gone(successor, 240)  # the rest of the job, after the first has ended
    assert log_says(log, "rank 0: SIGUSR2: draining")
    assert_drained_then_completed_once(output, reference)
    assert [run["slurm_job"] for run in runs_of(output)] == [first, successor]
    assert (tmp_path / "chained.slurm" / f"{successor}.log").exists()  # the successor logs beside the first


def test_a_drain_that_commits_nothing_gives_up_at_its_deadline_and_is_not_requeued(slurm_cluster, tmp_path):
    """The decode rank is stopped (SIGSTOP) before any unit reaches rank 0, then the job is told to
    drain: the units in flight never arrive, rank 0 gives up at the deadline (drain_seconds 10:
    5 s), closes the output and exits 5, and the script does not requeue."""
    job = write(tmp_path, STAGED.replace("drain_seconds: 30", "drain_seconds: 10").replace("steps: 16", "steps: 64"),
                PROMPTS[:4])
    output = tmp_path / "idle.h5"
    job_id = submit(job, "-o", output)
    wait_until(output.exists, "rank 0 to open the output (set-up done)")
    decode = wait_until(lambda: job_processes(job_id, task=3), "the decode rank")[0]
    stop_process(decode, signal.SIGSTOP)
    try:
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=30)
        wait_gone(job_id, 90)
    finally:
        stop_process(decode, signal.SIGCONT)
    log = (tmp_path / "idle.slurm" / f"{job_id}.log").read_text()
    assert "before this run committed anything" in log and "not requeued" in log
    runs = runs_of(output)
    assert [(run["status"], int(run["items_committed"])) for run in runs] == [("preempted", 0)]


def test_a_signal_before_the_run_starts_does_not_kill_the_script(slurm_cluster, tmp_path):
    """The drain signal lands while the script is still choosing the srun --mpi plugin (held
    there by a --python wrapper until the signal is sent): the script says so, starts nothing and
    does not requeue."""
    from onepiece_hpc import environment
    from onepiece_hpc.slurm.submit import plan_job, submit_job

    gate = tmp_path / "python"
    gate.write_text("#!/bin/bash\n"
                    f'if [ "$2" = onepiece_hpc.slurm.mpi ]; then touch "{tmp_path}/at-gate"; '
                    f'until [ -e "{tmp_path}/open" ]; do sleep 0.1; done; fi\n'
                    f'exec {sys.executable} "$@"\n')
    gate.chmod(0o755)
    job = write(tmp_path, STAGED.replace(", mpi: pmi2", ""), PROMPTS[:2])
    planned = plan_job(job, tmp_path / "early.h5", {}, str(gate))
    job_id = submit_job(planned, environment.slurm_index_dir())
    wait_until((tmp_path / "at-gate").exists, "the script to reach the --mpi detection", 90)
    shell = wait_until(lambda: job_processes(job_id), "the batch script's process")[0]
    # what was signalled, for the message should the script not see it (seen once in the suite)
    signalled = subprocess.run(["ps", "-o", "pid,ppid,stat,args", "--ppid", str(shell), "-p", str(shell)],
                               capture_output=True, text=True, timeout=30).stdout
    os.kill(shell, signal.SIGUSR1)  # pending for the script before the command it waits on ends
    (tmp_path / "open").touch()
    wait_gone(job_id, 60)
    log = (tmp_path / "early.slurm" / f"{job_id}.log").read_text()
    assert "got SIGUSR1 before the run started: not starting it" in log and "not requeued" in log, \
        f"SIGUSR1 went to {shell}:\n{signalled}\nthe job's log:\n{log}"
    assert not (tmp_path / "early.h5").exists()


HOSTILE = "it's \"q\" $(touch PWNED) `touch PWNED`; touch PWNED\nline two"


def test_a_job_full_of_hostile_strings_runs_as_data(slurm_cluster, tmp_path):
    folder = tmp_path / HOSTILE
    prompts = [HOSTILE.replace("\n", " "), "$(touch PWNED)", "`touch PWNED`; rm -rf ~"]
    body = ("name: hostile\nmodel: builtin:tiny-sd\nprompts: prompts.txt\n"
            "params: {steps: 2, height: 64, width: 64, negative_prompt: '$(touch PWNED)'}\n"
            f"description: {json.dumps(HOSTILE)}\ndevice: cpu\n"
            f"output: {json.dumps('out/' + HOSTILE.replace(chr(10), ' ') + '.h5')}\n"
            "slurm: {ntasks_per_node: 1, time: \"10:00\"}\n")
    job = write(folder, body, prompts)
    job_id = submit(job)
    wait_gone(job_id)
    output = folder / "out" / (HOSTILE.replace("\n", " ") + ".h5")
    with h5py.File(output, "r") as file:
        assert file["done"][...].all()
        assert [p.decode() for p in file["items"]["prompt"][...]] == prompts
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists() and not Path("PWNED").exists()


def test_python_api_drains_requeues_through_submitit_and_completes_once(slurm_cluster, staged_job, tmp_path):
    """Slurm's drain signal reaches every task of a submitit job: rank 0 drains, then submitit
    checkpoints and requeues; the requeued job completes, every task reporting once."""
    from onepiece_hpc.slurm import api

    job, reference = staged_job
    output = tmp_path / "api.h5"
    submitted = api.submit(job, output=output)
    wait_commits(output, submitted.job_id)
    subprocess.run(["scancel", "--signal=USR1", submitted.job_id], check=True, timeout=30)  # as --signal=USR1@N
    wait_requeued(submitted.job_id, 90)
    start_now(submitted.job_id)
    wait_gone(submitted.job_id)
    assert submitted.results() == ["completed"] * 4
    assert_drained_then_completed_once(output, reference)


def test_a_failing_srun_is_named_in_the_log_and_status(slurm_cluster, tmp_path):
    job = write(tmp_path, STAGED, PROMPTS[:2])
    job_id = submit(job, "--mpi", "bogus")
    wait_gone(job_id)
    log = (tmp_path / "out" / "staged.slurm" / f"{job_id}.log").read_text()
    assert "srun --mpi=bogus failed with exit code" in log and "bogus" in log.split("onepiece.sbatch")[0]
    info = wait_until(lambda: (s := json.loads(onepiece("status", job_id, "--json")[1]))["state"] == "FAILED"
                      and s, "sacct to record the job as FAILED", 30)
    assert info["items_done"] == 0


def test_a_refusal_found_only_by_rank_0_ends_every_rank_under_srun(slurm_cluster, tmp_path):
    """The output is being written by another run (its lock is held, as by the job's first run when
    the job is submitted again): only rank 0 finds it, after every rank has started; the whole step
    ends within 30 s of the refusal, which the log names, and is not requeued. srun reports the
    tasks MPI_Abort ended as killed; the script reads rank 0's report and the job exits 2."""
    job = write(tmp_path, STAGED.replace("steps: 16", "steps: 2"), PROMPTS[:2])
    output = tmp_path / "out" / "staged.h5"
    code, _, err = onepiece("run", job, "--monolithic")
    assert code == 0, err
    holder = (f"import time; from pathlib import Path; from onepiece_hpc.store.lock import WriterLock, myself; "
              f"WriterLock.acquire(Path({str(output) + '.d/lock'!r}), myself('another run', '', 0), "
              f"Path({str(output)!r})); print('held', flush=True); time.sleep(600)")
    with subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True) as other:
        try:
            assert other.stdout.readline().strip() == "held"
            job_id = submit(job)
            log = tmp_path / "out" / "staged.slurm" / f"{job_id}.log"
            wait_until(lambda: log_says(log, "is being written by pid"), "rank 0's refusal in the job's log")
            refused_at = time.monotonic()
            wait_gone(job_id, 60)
            assert time.monotonic() - refused_at < 30, "the other ranks outlived rank 0's refusal"
        finally:
            other.kill()
    text = log.read_text()
    assert "fix: wait for that run to finish" in text and "requeueing" not in text
    assert "after rank 0 refused the job" in text, text[-3000:]
    assert not job_processes(job_id)
    ended = wait_until(lambda: (line := accounting(job_id)).startswith("FAILED|") and line,
                       "sacct to record the job as FAILED", 30)
    assert ended == "FAILED|2:0"  # the script's exit code: refused, not srun's 137
