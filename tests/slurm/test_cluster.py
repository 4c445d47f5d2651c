"""End to end on a real local Slurm: submit, sweep arrays + merge, scancel + resubmit, preemption
and requeue, hostile strings, the submitit API, and a failing srun."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from support import runs_of
from slurm_helpers import REPO, onepiece, start_now, squeue_state, wait_gone, wait_until

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
slurm: {ntasks_per_node: 4, time: "10:00", drain_seconds: 30}
"""


@pytest.fixture(scope="module")
def staged_job(tmp_path_factory):
    """A 4-task job slow enough to interrupt, and its uninterrupted output (the monolithic reference)."""
    folder = tmp_path_factory.mktemp("staged")
    job = write(folder, STAGED, PROMPTS)
    reference = folder / "reference.h5"
    code, _, err = onepiece("run", job, "--monolithic", "-o", reference)
    assert code == 0, err
    return job, reference


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


def run_statuses(output: Path) -> list[str]:
    return [run["status"] for run in runs_of(output)]


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
    wait_until(lambda: done_count(output) >= 2, "the first commits")
    subprocess.run(["scancel", first], check=True, timeout=30)
    wait_gone(first)
    assert 2 <= done_count(output) < len(PROMPTS)
    second = submit(job, "-o", output)
    wait_gone(second)
    assert_same_complete_output(output, reference)


def test_preemption_signal_drains_requeues_and_the_requeued_job_finishes(slurm_cluster, staged_job, tmp_path):
    job, reference = staged_job
    output = tmp_path / "preempted.h5"
    job_id = submit(job, "-o", output)
    wait_until(lambda: done_count(output) >= 2, "the first commits")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=30)  # as --signal=B:USR1@N
    wait_until(lambda: squeue_state(job_id) == "PENDING", "the job to be requeued", 60)
    assert "preempted" in run_statuses(output)
    drained_at = done_count(output)
    assert drained_at < len(PROMPTS)
    start_now(job_id)
    wait_gone(job_id)
    assert_same_complete_output(output, reference)
    assert run_statuses(output)[-1] == "completed"
    log = (tmp_path / "preempted.slurm" / f"{job_id}.log").read_text()
    assert "requeueing job" in log


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


def test_python_api_submits_through_submitit(slurm_cluster, tmp_path):
    from onepiece_hpc.slurm import api

    job = write(tmp_path, STAGED.replace("steps: 16", "steps: 2"), PROMPTS[:4])
    submitted = api.submit(job, output=tmp_path / "api.h5")
    wait_gone(submitted.job_id)
    assert submitted.results() == ["completed"] * 4
    assert done_count(tmp_path / "api.h5") == 4


def test_a_failing_srun_is_named_in_the_log_and_status(slurm_cluster, tmp_path):
    job = write(tmp_path, STAGED, PROMPTS[:2])
    job_id = submit(job, "--mpi", "bogus")
    wait_gone(job_id)
    log = (tmp_path / "out" / "staged.slurm" / f"{job_id}.log").read_text()
    assert "srun --mpi=bogus failed with exit code" in log and "bogus" in log.split("onepiece.sbatch")[0]
    info = wait_until(lambda: (s := json.loads(onepiece("status", job_id, "--json")[1]))["state"] == "FAILED"
                      and s, "sacct to record the job as FAILED", 30)
    assert info["items_done"] == 0
