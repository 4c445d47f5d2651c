"""Runs that cross host boundaries, on a real Slurm of four separate hosts on this machine (each its
own network, hostname, /tmp and /dev/shm; slurm/local-cluster.sh up --hosts 4): a staged job over
three hosts equals the one-process run, shm inside a host and mpi-rma across, moves included and a
slow link; a host killed mid-run is named and Slurm's requeue completes the output exactly once on
the other hosts; a cut link ends the job within the heartbeat deadline, never a hang; a sweep whose
array tasks land on different hosts merges."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from slurm_helpers import log_says, onepiece, squeue_state, wait_gone, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

#: two tasks a host over three hosts: rank 0 and a stage rank on the first, two stage ranks on each other
JOB = """name: hosts
model: builtin:tiny-sd
prompts: prompts.jsonl
params: {{steps: {steps}, guidance: 4.0, height: 64, width: 64}}
seed: 5
device: cpu
output: out/hosts.h5
stages: {stages}
{extra}slurm: {{nodes: 3, ntasks_per_node: 2, time: "10:00", mpi: pmi2{slurm}}}
"""


def write_job(folder: Path, count: int, steps: int, quick: int = 0, stages: str = "{encode: 1, denoise: 3, decode: 1}",
              extra: str = "", slurm: str = "") -> Path:
    """A staged job of `count` items; the first `quick` take 2 steps (their commits come fast, so a
    fault made after them lands while most units are not even dispatched)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"prompt": f"a harbour at dusk, study {i}", **({"steps": 2} if i < quick else {})} for i in range(count)]
    (folder / "prompts.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    job = folder / "job.yaml"
    job.write_text(JOB.format(steps=steps, stages=stages, extra=extra, slurm=slurm), encoding="utf-8")
    return job


def reference_of(job: Path) -> dict[str, np.ndarray]:
    """The one-process run of the job (on the head, outside the hosts): what every placement must equal."""
    code, _, err = onepiece("run", job, "--monolithic", "-o", job.parent / "reference.h5")
    assert code == 0, err
    return images_of(job.parent / "reference.h5")


def images_of(output: Path) -> dict[str, np.ndarray]:
    with h5py.File(output, "r", locking=False) as f:
        return {"done": f["done"][...], "key": f["items"]["key"][...], "images": f["outputs/images"][...]}


def done_count(output: Path) -> int:
    try:
        with h5py.File(output, "r", locking=False) as f:
            return int(f["done"][...].sum())
    except (OSError, KeyError):
        return 0


def submit(job: Path) -> tuple[str, Path]:
    code, out, err = onepiece("submit", job)
    assert code == 0, err
    job_id = out.strip().splitlines()[0]
    return job_id, job.parent / "out" / "hosts.slurm" / f"{job_id}.log"


def nodes_of(job_id: str) -> list[str]:
    """The job's nodes, in Slurm's order (rank 0 runs on the first)."""
    listed = wait_until(lambda: squeue_state(job_id) == "RUNNING" and subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True, timeout=30).stdout.strip(),
        f"job {job_id} to run", 120)
    return subprocess.run(["scontrol", "show", "hostnames", listed], capture_output=True, text=True,
                          timeout=30, check=True).stdout.split()


def inspected(output: Path) -> dict:
    code, out, err = onepiece("inspect", output, "--json")
    assert code == 0, err
    return json.loads(out)


def ranks_table(output: Path) -> np.ndarray:
    runs = sorted((output.parent / f"{output.name}.d" / "telemetry").glob("run-*.h5"))
    with h5py.File(runs[-1], "r") as f:
        return f["ranks"][...]


def run_started_on(output: Path, run: int = 0) -> str:
    """The host of rank 0 in the output's run record (`onepiece inspect`: 'on HOST')."""
    return inspected(output)["runs"][run]["host"]


def rank_0_pid(job_id: str) -> int:
    """The pid (as this machine's head sees it) of rank 0 of the job, wherever its host runs it."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (b"onepiece_hpc.runtime.rank_main" in argv and b"PMI_RANK=0" in environ
                and f"SLURM_JOB_ID={job_id}".encode() in environ):
            return int(entry.name)
    raise AssertionError(f"no rank 0 of job {job_id} runs")


def lost_hosts_named(log_text: str) -> list[str]:
    """The hosts rank 0's error calls lost."""
    return sorted(set(re.findall(r"host (\w+) is lost", log_text)))


def start_requeued(job_id: str, deadline_s: float = 150.0) -> None:
    """Slurm holds a requeued job back for about two minutes (its begin time): let it start once it
    is pending again."""
    wait_until(lambda: squeue_state(job_id) == "PENDING", f"job {job_id} to be requeued", deadline_s)
    time.sleep(2.0)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, timeout=30)


def test_a_staged_job_over_three_hosts_equals_the_one_process_run(hosts, tmp_path):
    """Three encode ranks for a denoise-heavy batch, an eager adaptive policy (ranks move between
    stages, across hosts), and one host's link held to 20 Mbit/s the whole run."""
    job = write_job(tmp_path, 24, steps=6, stages="{encode: 3, denoise: 1, decode: 1}",
                    extra="policy: {name: adaptive, interval_s: 0.3, cooldown_s: 0.5, margin: 0.0}\n")
    reference = reference_of(job)
    hosts.script("slow", "h2", "20")
    job_id, log = submit(job)
    wait_gone(job_id, 300)
    output = tmp_path / "out" / "hosts.h5"
    got = images_of(output)
    assert got["done"].all(), log.read_text()[-3000:]
    np.testing.assert_array_equal(got["key"], reference["key"])
    np.testing.assert_array_equal(got["images"], reference["images"])
    info = inspected(output)
    assert [int(r["items_committed"]) for r in info["runs"]] == [24]  # every item once, in one run
    telemetry = info["telemetry"][-1]
    assert len(telemetry["hosts"]) == 3, telemetry
    assert set(telemetry["channels"]) == {"shm", "mpi-rma"}, telemetry  # auto: shm in a host, mpi-rma across
    ranks = ranks_table(output)
    host = {0: run_started_on(output)} | {int(r["rank"]): r["host"].decode() for r in ranks}
    for row in ranks:
        for link in row["links"].decode().replace(";", ",").split(","):
            direction, peer, fabric = link.split()
            same = host[int(peer)] == host[int(row["rank"])]
            assert fabric == ("shm" if same else "mpi-rma"), (row["rank"], link, host)
    assert telemetry["moves"] >= 1, telemetry  # the moves ran over hosts too (the channels cross them)


def test_a_host_killed_mid_run_is_named_and_slurms_requeue_completes_the_output_once(hosts, tmp_path):
    job = write_job(tmp_path, 16, steps=24, quick=2)
    reference = reference_of(job)
    job_id, log = submit(job)
    nodes = nodes_of(job_id)
    output = tmp_path / "out" / "hosts.h5"
    wait_until(lambda: done_count(output) >= 2, "the first commits", 150)
    victim = nodes[-1]  # not the first: that one runs the batch script and rank 0
    hosts.script("kill", victim)
    killed_at = time.monotonic()
    wait_until(lambda: log_says(log, f"host {victim} is lost"), f"rank 0 to name the lost host {victim}", 60)
    named_after = time.monotonic() - killed_at
    text = log.read_text()
    assert re.search(rf"host {victim} is lost: every rank on it died at once \(ranks 4 \(\w+\), 5 \(\w+\)", text), text
    assert lost_hosts_named(text) == [victim], text[-3000:]  # the live hosts that talked to it are not
    start_requeued(job_id)
    wait_gone(job_id, 240)
    text = log.read_text()
    assert f"node(s) {victim} of this job" in text, text[-3000:]
    got = images_of(output)
    assert got["done"].all(), text[-3000:]
    np.testing.assert_array_equal(got["images"], reference["images"])
    info = inspected(output)
    runs = info["runs"]
    assert len(runs) == 2 and sum(int(r["items_committed"]) for r in runs) == 16, runs  # exactly once
    assert victim not in info["telemetry"][-1]["hosts"]  # the requeued job ran without the lost host
    assert named_after < 30


@pytest.mark.parametrize("rank_0", ["free", "blocked"])
def test_a_cut_link_ends_the_job_within_the_heartbeat_deadline(hosts, tmp_path, rank_0):
    """No packet reaches the host any more, and none is refused: rank 0 names it after the
    heartbeat timeout (10 s here) and ends the job; it is never left hanging. "blocked": rank 0's
    main loop is held in its commits when the link goes (strace delays each of its pwrites by
    30 s, as a stalled file system would, or a call to the dead host that never returns), so its
    watch must name the host and end the job, and name no live host: when the held call keeps the
    interpreter, the pulses of the live ranks wait unread for as long."""
    job = write_job(tmp_path, 16, steps=24, quick=2, slurm=", heartbeat_timeout: 10")
    job_id, log = submit(job)
    nodes = nodes_of(job_id)
    output = tmp_path / "out" / "hosts.h5"
    wait_until(lambda: done_count(output) >= 2, "the first commits", 150)
    held = None
    if rank_0 == "blocked":
        held = subprocess.Popen(["strace", "-qq", "-o", "/dev/null", "-e", "trace=pwrite64",
                                 "-e", "inject=pwrite64:delay_enter=30000000", "-p", str(rank_0_pid(job_id))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5.0)  # the next commits are under way, each pwrite held 30 s
    victim = nodes[-1]
    hosts.script("cut", victim)
    cut_at = time.monotonic()
    try:
        wait_until(lambda: log_says(log, f"host {victim} is lost"), f"rank 0 to name the cut-off host {victim}", 90)
        named_after = time.monotonic() - cut_at
        wait_until(lambda: squeue_state(job_id) != "RUNNING", "the job to stop running", 90)
    finally:
        if held is not None:
            held.kill()
            held.wait(timeout=30)
    subprocess.run(["scancel", job_id], timeout=30)
    wait_gone(job_id, 120)
    text = log.read_text()
    assert ("its watch ends the job" in text) == (rank_0 == "blocked"), text[-3000:]
    assert re.search(rf"host {victim} is lost: every rank on it died at once \(ranks 4 \(\w+\), 5 \(\w+\): "
                     r"no heartbeat for", text), text[-3000:]
    assert lost_hosts_named(text) == [victim], text[-3000:]  # the live hosts blocked talking to it are not
    assert "silent too" not in text, text[-3000:]  # their ranks still pulse
    # a held pwrite inside an HDF5 call that keeps the GIL (a flush, a close) stops every thread of
    # rank 0, its watch too, until it returns: then the watch acts at once (runtime/pulse.py)
    held_s = 30 if rank_0 == "blocked" else 0
    assert named_after < 10 + held_s + 15, f"named {named_after:.0f} s after the cut"
    assert 2 <= done_count(output) < 16


SWEEP = """name: sw
model: builtin:tiny-sd
prompts: prompts.txt
params: {steps: 2, height: 64, width: 64}
device: cpu
grid:
  seed: [0, 100, 200]
output: out
slurm: {ntasks_per_node: 1, cpus_per_task: 4, time: "10:00"}
"""


def test_a_sweep_whose_array_tasks_land_on_different_hosts_merges(hosts, tmp_path):
    """Each array task claims a whole host (4 CPUs), so the three shards run on three hosts; the
    merge of their outputs is one view of every item."""
    (tmp_path / "prompts.txt").write_text("a red boat\na blue boat\n", encoding="utf-8")
    (tmp_path / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    code, out, err = onepiece("sweep", tmp_path / "sweep.yaml")
    assert code == 0, err
    for job_id in out.split():
        wait_gone(job_id, 240)
    shards = sorted((tmp_path / "out").glob("*.h5"))
    assert len(shards) == 3
    made_on = {inspected(shard)["provenance"]["host"] for shard in shards}
    assert len(made_on) == 3, made_on
    code, _, err = onepiece("merge", tmp_path / "out", "-o", tmp_path / "merged.h5")
    assert code == 0, err
    info = inspected(tmp_path / "merged.h5")
    assert (info["items_total"], info["items_done"], info["complete"]) == (6, 6, True)
    with h5py.File(tmp_path / "merged.h5", "r") as merged:
        for number, shard in enumerate(shards):
            with h5py.File(shard, "r") as part:
                assert np.array_equal(merged["outputs/images"][number * 2:(number + 1) * 2], part["outputs/images"][...])
