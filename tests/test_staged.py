"""The staged runtime with real MPI ranks: same bits as the reference path, every item once,
a killed rank named in one clear error, and a resumable output."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from support import (
    builtin_model, done_count, error_lines, invoke, leaked_segments, run_cli, running, runs_of, shm_segments, tamper,
    telemetry_of, wait_until, write_job, write_png,
)
from support import rank_pids as _rank_pids

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

PROMPTS = [f"staged prompt {i}: a {c} house by a lake" for i, c in enumerate(
    ["red", "blue", "green", "white", "black", "tiny", "huge", "round", "tall"])]
MIXED = "".join(f'{{"prompt": "{p}", "steps": {2 if i % 3 else 4}}}\n' for i, p in enumerate(PROMPTS))


def _images(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        assert f["done"][...].all(), "every item must be done"
        return f["outputs/images"][...]


CONFIGS = [  # model, stages, microbatch, fabric
    ("tiny-sd", "{encode: 1, denoise: 1, decode: 1}", 1, "auto"),
    ("tiny-sd", "{encode: 2, denoise: 2, decode: 2}", 2, "mpi-rma"),
    ("tiny-pixart", "{encode: 1, denoise: 3, decode: 1}", 2, "shm"),
    ("tiny-pixart", "{encode: 3, denoise: 1, decode: 2}", 1, "auto"),
    ("tiny-sdxl", "{encode: 1, denoise: 1, decode: 1}", 2, "auto"),
]


@pytest.mark.parametrize("model, stages, microbatch, fabric", CONFIGS,
                         ids=[f"{m}-{s.count('2') and '2' or s.count('3') and '3' or '1'}x-mb{b}-{f}"
                              for m, s, b, f in CONFIGS])
def test_staged_equals_monolithic_bit_for_bit(tmp_path, model, stages, microbatch, fabric):
    params = "{steps: 3, guidance: 4.0, height: 64, width: 64}"
    common = dict(model=f"builtin:{model}", microbatch=str(microbatch), params=params, prompt_file="p.jsonl",
                  prompts="p.jsonl")
    reference = write_job(tmp_path / "mono", MIXED, **common)
    assert invoke("run", reference, "--monolithic").code == 0
    staged = write_job(tmp_path / "staged", MIXED, stages=stages, **common)
    ranks = 1 + sum(int(n) for n in stages.strip("{}").replace(" ", "").split(",") for n in [n.split(":")[1]])
    before = shm_segments()
    proc = run_cli("run", staged, "-n", ranks, "--fabric", fabric, "--wait-timeout", "60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "items done" in proc.stdout and "denoise" in proc.stdout  # the summary table
    np.testing.assert_array_equal(_images(tmp_path / "staged/out/t.h5"), _images(tmp_path / "mono/out/t.h5"))
    run = runs_of(tmp_path / "staged/out/t.h5")[0]
    assert run["status"] == "completed" and int(run["items_committed"]) == len(PROMPTS)
    record = telemetry_of(tmp_path / "staged/out/t.h5")
    assert [s.decode() for s in record.stages["stage"]] == ["encode", "denoise", "decode"]
    with h5py.File(tmp_path / "staged/out/t.h5", "r") as f:
        units = len(set(f["items"]["unit"]))
    assert int(record.stages["units"][0]) == int(record.stages["units"][2]) == units
    assert len(record.samples) > 0
    assert not leaked_segments(before), "shared-memory segments left behind"


WAN_PROMPTS = [f"video {i}: a {c} kite over a beach" for i, c in enumerate(["red", "blue", "green", "white", "black"])]


def _videos(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        assert f["done"][...].all(), "every item must be done"
        return f["outputs/videos"][...]


def _wan_job(folder: Path, model: str, **fields) -> Path:
    """Five prompts, two to a unit; image-to-video gets a job-wide first frame and one line its own."""
    lines = [{"prompt": p} for p in WAN_PROMPTS]
    params = "steps: 2, guidance: 4.0, height: 32, width: 32, frames: 9"
    if model.endswith("i2v"):
        write_png(folder / "first.png")
        write_png(folder / "own.png", shift=60)
        lines[3]["image"] = "own.png"
        params += ", image: first.png"
    text = "".join(json.dumps(line) + "\n" for line in lines)
    return write_job(folder, text, prompt_file="p.jsonl", prompts="p.jsonl", model=f"builtin:{model}",
                     microbatch="2", params=f"{{{params}}}", **fields)


@pytest.mark.parametrize("model", ["tiny-wan-t2v", "tiny-wan-i2v"])
def test_wan_staged_equals_monolithic_and_resume_writes_each_video_once(tmp_path, model):
    assert invoke("run", _wan_job(tmp_path / "mono", model), "--monolithic").code == 0
    expected = _videos(tmp_path / "mono/out/t.h5")
    job = _wan_job(tmp_path / "staged", model, stages="{encode: 1, denoise: 1, decode: 1}")
    output = tmp_path / "staged/out/t.h5"
    proc = run_cli("run", job, "-n", "4", "--wait-timeout", "60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(_videos(output), expected)
    tamper(output, [1, 3], done=0)  # as a crash between commits leaves it: two videos not yet committed
    tamper(output, [1], pixels=0)
    again = invoke("run", job, "--monolithic")  # resuming is the writer's work, the same in either mode
    assert again.code == 0, again.err
    assert "(2 this run" in again.out
    np.testing.assert_array_equal(_videos(output), expected)
    assert [int(run["items_committed"]) for run in runs_of(output)] == [len(WAN_PROMPTS), 2]


def test_too_many_stage_ranks_is_refused_before_start(tmp_path):
    job = write_job(tmp_path, PROMPTS, stages="{encode: 2, denoise: 3, decode: 2}")
    result = invoke("run", job, "-n", "6")
    assert result.code == 2
    assert "7 stage ranks" in result.err and "-n 8" in result.err
    assert not (tmp_path / "out").exists()


INTERRUPTED = [f"interrupted run item {i}" for i in range(40)]
INTERRUPTED_PARAMS = "{steps: 8, guidance: 4.0, height: 64, width: 64}"


def _interruptible_job(tmp_path: Path) -> tuple[Path, Path]:
    """A staged job long enough to interrupt midway, and its output path."""
    job = write_job(tmp_path / "cut", INTERRUPTED, params=INTERRUPTED_PARAMS,
                    stages="{encode: 1, denoise: 2, decode: 1}")
    return job, tmp_path / "cut/out/t.h5"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> np.ndarray:
    """The images of the interruptible job run whole in one process, once for every test here."""
    whole = write_job(tmp_path_factory.mktemp("whole"), INTERRUPTED, params=INTERRUPTED_PARAMS)
    assert invoke("run", whole, "--monolithic").code == 0
    return _images(whole.parent / "out/t.h5")


def _resume_completes_exactly_once_and_identical(reference: np.ndarray, job: Path, output: Path, kept: int) -> None:
    again = run_cli("run", job, "-n", "5", "--wait-timeout", "60")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"({len(INTERRUPTED) - kept} this run" in again.stdout
    np.testing.assert_array_equal(_images(output), reference)


def test_killed_worker_gives_one_clear_error_and_a_resumable_output(tmp_path, uninterrupted):
    job, output = _interruptible_job(tmp_path)
    with running("run", job, "-n", "5", "--wait-timeout", "60") as proc:
        wait_until(proc, lambda: done_count(output) >= 2, "two committed items")
        pids = _rank_pids(str(job))
        victim = random.Random(len(INTERRUPTED)).choice(sorted(r for r in pids if r != 0))
        os.kill(pids[victim], signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=120)
        noticed = time.monotonic() - killed_at
    assert proc.returncode == 1, err[-3000:]
    errors = error_lines(err)
    assert len(errors) == 1, err[-3000:]
    stage = {1: "encode", 2: "denoise", 3: "denoise", 4: "decode"}[victim]
    assert f"rank {victim} on " in errors[0] and f"stage {stage}" in errors[0] and "died" in errors[0], errors[0]
    assert "resume" in errors[0]
    assert noticed < 30, f"the failure took {noticed:.0f} s to surface"
    kept = done_count(output)
    assert 2 <= kept < len(INTERRUPTED)
    _resume_completes_exactly_once_and_identical(uninterrupted, job, output, kept)
    assert not _rank_pids(str(job)), "ranks left running"


def test_rank_that_raises_is_reported_once_with_rank_stage_and_cause(tmp_path, model_cache):
    import shutil

    folder = tmp_path / "broken-sd"
    shutil.copytree(builtin_model(model_cache, "tiny-sd"), folder)
    (folder / "vae/diffusion_pytorch_model.safetensors").write_bytes(b"not weights at all")
    job = write_job(tmp_path, PROMPTS[:3], model="broken-sd", stages="{encode: 1, denoise: 1, decode: 1}")
    proc = run_cli("run", job, "-n", "4", "--wait-timeout", "60")
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "rank 3 on " in errors[0] and "stage decode" in errors[0] and "no unit in hand" in errors[0]
    assert "resume" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not _rank_pids(str(job)), "ranks left running"


def test_bench_pipeline_reports_both_modes_as_json(tmp_path):
    job = write_job(tmp_path, PROMPTS[:6])
    proc = run_cli("bench", "pipeline", job, "-n", "4", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    result = json.loads(proc.stdout)
    assert result["staged"]["items"] == result["data_parallel"]["items"] == 6
    for mode in ("staged", "data_parallel"):
        record = result[mode]
        assert record["items_per_s"] > 0 and 0 <= record["busy_share"] <= 1
        assert abs(record["busy_share"] + record["moving_share"] + record["idle_share"] - 1) < 1e-9
    assert result["ratios"]["throughput"] == pytest.approx(
        result["staged"]["items_per_s"] / result["data_parallel"]["items_per_s"])


def test_drain_signal_commits_what_is_dispatched_then_resume_finishes(tmp_path, uninterrupted):
    job, output = _interruptible_job(tmp_path)
    with running("run", job, "-n", "5", "--wait-timeout", "60") as proc:
        wait_until(proc, lambda: done_count(output) >= 2, "two committed items")
        for pid in _rank_pids(str(job)).values():  # as `sbatch --signal=USR1@T` does: every rank gets it
            os.kill(pid, signal.SIGUSR1)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-3000:]
    assert "run the same command again" in err
    kept = done_count(output)
    assert 2 <= kept < len(INTERRUPTED)
    first = runs_of(output)[0]
    assert first["status"] == "preempted" and int(first["items_committed"]) == kept
    _resume_completes_exactly_once_and_identical(uninterrupted, job, output, kept)


@pytest.mark.parametrize("victim", ["node-manager", "everything"])
def test_kill9_of_the_writer_or_the_whole_run_then_resume_is_exactly_once_and_identical(tmp_path, victim,
                                                                                       uninterrupted):
    """A kill -9 of rank 0 (the writer) alone, or of every process at once as a dead node does, while
    units commit: every command reads what is left, and a staged resume completes it bit for bit."""
    job, output = _interruptible_job(tmp_path)
    with running("run", job, "-n", "5", "--wait-timeout", "60") as proc:
        wait_until(proc, lambda: done_count(output) >= 3, "three committed items")
        if victim == "everything":  # every rank, then the launcher (mpiexec keeps the ranks in groups of their own)
            for rank_pid in _rank_pids(str(job)).values():
                os.kill(rank_pid, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(_rank_pids(str(job))[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    if victim == "node-manager":  # the launcher names rank 0; the stage ranks that found it gone keep quiet
        errors = error_lines(err)
        assert len(errors) == 1 and "rank 0 on " in errors[0] and "died" in errors[0], err[-3000:]
    for rank_pid in _rank_pids(str(job)).values():  # what a killed launcher left (issue of its own)
        try:
            os.kill(rank_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert invoke("inspect", output).code == 0
    assert invoke("verify", output).code == 1  # not complete, nothing damaged
    kept = done_count(output)
    assert 3 <= kept < len(INTERRUPTED)
    assert runs_of(output)[0]["status"] == "running"  # the run's end was never recorded
    _resume_completes_exactly_once_and_identical(uninterrupted, job, output, kept)


def test_a_staged_run_into_an_output_in_use_is_refused_at_once(tmp_path):
    """The writer's lock is found taken only on rank 0, after every rank started: the job ends with exit 2
    naming the holder instead of leaving the other ranks waiting."""
    job, output = _interruptible_job(tmp_path)
    with running("run", job, "--monolithic") as first:  # an output with a few items, as a run leaves it
        wait_until(first, lambda: done_count(output) >= 1, "a committed item")
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
    holder = (f"import sys, time; from pathlib import Path; from onepiece_hpc.store.lock import WriterLock, myself; "
              f"WriterLock.acquire(Path('{output}.d/lock'), myself('another run', '', 0), Path('{output}')); "
              "print('held', flush=True); time.sleep(600)")
    with subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True) as other:
        try:
            assert other.stdout.readline().strip() == "held"
            second = run_cli("run", job, "-n", "5", "--wait-timeout", "600")  # a wait would outlast run_cli's bound
        finally:
            other.kill()
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is being written by pid {other.pid}" in second.stderr
