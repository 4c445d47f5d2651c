"""How a staged job's start-up scales with its prompt count (`onepiece bench startup`).

For each count N: a prompt file of N distinct lines, the built-in tiny model, a staged run of
R local ranks (`onepiece run -n R`). Measured from the launch: when the first item is committed
(so the first unit was dispatched, run through every stage and written before), and the peak
memory (VmHWM) of rank 0 and of the largest stage rank at that moment; then the run is stopped
and its folder removed. The baseline in the same run is the smallest count: the ratios say what
the item count costs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = """name: startup
model: builtin:tiny-sd
prompts: prompts.txt
params: {{steps: 1, height: 32, width: 32}}
device: cpu
microbatch: {microbatch}
"""
WAIT_S = 1800.0


def write_prompts(path: Path, count: int) -> None:
    """`count` distinct prompts of about 60 characters, written in large blocks."""
    block = 100_000
    with open(path, "w", encoding="utf-8") as out:
        for start in range(0, count, block):
            out.write("".join(f"a photograph of item {i}, a cat on a mat in soft light, study {i % 977}\n"
                              for i in range(start, min(start + block, count))))


def _rank_pids(job: Path) -> dict[int, int]:
    """rank -> pid of the rank processes running `job` (found by their command lines)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            environ = Path(entry.path, "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"onepiece_hpc.runtime.rank_main" in argv and str(job).encode() in argv:
            rank = next((v.split(b"=", 1)[1] for v in environ if v.startswith((b"PMI_RANK=", b"OMPI_COMM_WORLD_RANK="))),
                        None)
            if rank is not None:
                found[int(rank)] = int(entry.name)
    return found


def _peak_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else float("nan")


def _first_commit(output: Path) -> bool:
    import h5py

    from onepiece_hpc.store.schema import data_folder

    folder = Path(data_folder(output))
    for data in sorted(folder.glob("data-*.h5")) if folder.exists() else ():
        try:
            with h5py.File(data, "r", locking=False) as file:
                if file["done"][:16].any():
                    return True
        except (OSError, KeyError):
            continue
    return False


def measure(folder: Path, count: int, ranks: int, microbatch: int) -> dict:
    """One count: launch, wait for the first commit, read the ranks' peak memory, stop."""
    work = Path(tempfile.mkdtemp(prefix=f"startup-{count}-", dir=folder))
    write_prompts(work / "prompts.txt", count)
    job = work / "job.yaml"
    job.write_text(JOB.format(microbatch=microbatch))
    output = work / "out.h5"
    log = open(work / "run.log", "w+", encoding="utf-8")
    started = time.monotonic()
    run = subprocess.Popen([sys.executable, "-m", "onepiece_hpc.cli.main", "run", str(job), "-n", str(ranks),
                            "-o", str(output)], stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        committed = None
        while time.monotonic() - started < WAIT_S:
            if run.poll() is not None:
                break
            if _first_commit(output):
                committed = time.monotonic() - started
                break
            time.sleep(0.2)
        pids = _rank_pids(job)
        peaks = {rank: _peak_mb(pid) for rank, pid in pids.items()}
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGINT)
            try:
                run.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    log.seek(0)
    text = log.read()
    log.close()
    if committed is None:
        raise RuntimeError(f"the run of {count} prompts committed nothing (exit {run.returncode}):\n{text[-3000:]}")
    stage_peaks = [mb for rank, mb in peaks.items() if rank != 0]
    return {"prompts": count, "ranks": ranks, "first_commit_s": committed, "rank0_peak_mb": peaks.get(0, float("nan")),
            "stage_peak_mb": max(stage_peaks) if stage_peaks else float("nan"), "folder": str(work)}
