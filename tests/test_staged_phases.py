"""A staged run in phases (--phases K with -n N): the ranks of a GPU take turns on it, one stage's
weights at a time. Rank 0's turns (runtime/manager/turns.py) in isolation, then real MPI runs: the
bits of the one-process run whatever the chains and phases, a failing unit recorded while the
rest of its phase goes on, a killed rank named in one clear error, a drain, each resumed to every
item exactly once, and the layouts a run in phases refuses."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from support import (
    done_count, error_lines, invoke, rank_pids, run_cli, running, runs_of, undecodable_png, wait_until, write_job,
    write_png,
)


# -- rank 0's turns ----------------------------------------------------------------------------
class Turns:
    """PhaseTurns with what it sent, in order."""

    def __init__(self, chains, phase: int) -> None:
        from onepiece_hpc.runtime.manager.turns import PhaseTurns

        self.sent: list[tuple[int, int]] = []
        self.turns = PhaseTurns(chains, phase, lambda rank, turn: self.sent.append((rank, turn.units)))

    def done(self, rank: int, passed: int, failed: int = 0) -> None:
        from onepiece_hpc.runtime.messages import TurnDone

        self.turns.done(TurnDone(rank, passed, failed, 0.5))


def test_the_ranks_of_a_chain_load_one_after_another_then_take_turns_by_phase():
    t = Turns(((1, 2, 3),), phase=4)
    for rank in (1, 2, 3):  # load turns, in the pipeline's order, one at a time
        t.turns.give(new_work=True)
        t.turns.give(new_work=True)  # the GPU is held: nothing more is given
        assert t.sent[-1] == (rank, 0)
        t.done(rank, 0)
    assert len(t.sent) == 3
    t.turns.give(new_work=True)
    assert t.sent[-1] == (1, 4)  # the first stage: up to 4 units of new work
    t.done(1, passed=3, failed=1)
    t.turns.give(new_work=True)
    assert t.sent[-1] == (2, 3)  # the next stage: exactly what was passed to it
    t.done(2, passed=3)
    t.turns.give(new_work=True)
    assert t.sent[-1] == (3, 3)
    t.done(3, passed=3)
    t.turns.give(new_work=False)  # nothing left to dispatch, nothing waiting: the GPU stays idle
    assert len(t.sent) == 6
    assert t.turns.totals.turns == 6 and t.turns.totals.weights_s == pytest.approx(3.0)


def test_chains_take_turns_on_their_own_gpus_and_a_turn_not_held_is_refused():
    from onepiece_hpc.runtime.manager.turns import TurnError

    t = Turns(((1, 3, 5), (2, 4, 6)), phase=2)
    t.turns.give(new_work=True)
    assert t.sent == [(1, 0), (2, 0)]  # one holder a chain, both chains at once
    with pytest.raises(TurnError, match="rank 3 ended a turn it did not hold"):
        t.done(3, 0)
    t.done(2, 0)
    t.turns.give(new_work=True)
    assert t.sent[-1] == (4, 0) and len(t.sent) == 3  # chain 1 waits for rank 1


def test_a_stage_with_nothing_passed_to_it_is_skipped():
    t = Turns(((1, 2, 3),), phase=2)
    for rank in (1, 2, 3):
        t.turns.give(new_work=True)
        t.done(rank, 0)
    t.turns.give(new_work=True)
    t.done(1, passed=0, failed=2)  # every unit of the phase failed in encode
    t.turns.give(new_work=True)
    assert t.sent[-1] == (1, 2)  # straight back to the first stage


def test_layouts_a_run_in_phases_refuses_name_the_fix(tmp_path):
    job = write_job(tmp_path, ["a lighthouse"], stages="{encode: 1, denoise: 2, decode: 1}")
    result = invoke("run", job, "-n", "5", "--phases", "2")
    assert result.code == 2
    assert "encode 1, denoise 2, decode 1" in result.err and "encode: 1, denoise: 1, decode: 1" in result.err
    assert "Traceback" not in result.err
    result = invoke("run", job, "-n", "5", "--phases", "2", "--policy", "adaptive")
    assert result.code == 2 and "--policy adaptive" in result.err
    assert not (tmp_path / "out").exists()


# -- real runs -----------------------------------------------------------------------------------
PROMPTS = [f"phased prompt {i}: a {c} boat at dusk" for i, c in enumerate(
    ["red", "blue", "green", "white", "black", "tiny", "huge", "round", "tall", "long", "old"])]
MIXED = "".join(f'{{"prompt": "{p}", "steps": {2 if i % 3 else 3}}}\n' for i, p in enumerate(PROMPTS))
PARAMS = "{steps: 2, guidance: 4.0, height: 64, width: 64}"


def _outputs(path: Path, name: str = "images") -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[f"outputs/{name}"][...]


def _monolithic(folder: Path, lines, **fields) -> np.ndarray:
    job = write_job(folder, lines, **fields)
    result = invoke("run", job, "--monolithic")
    assert result.code in (0, 4), result.err
    return job.parent / "out/t.h5"


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("stages, microbatch, phase", [
    ("{encode: 1, denoise: 1, decode: 1}", 2, 2),
    ("{encode: 2, denoise: 2, decode: 2}", 1, 3),
], ids=["one-chain-mb2-k2", "two-chains-mb1-k3"])
def test_a_staged_run_in_phases_writes_the_bits_of_the_one_process_run(tmp_path, stages, microbatch, phase):
    common = dict(prompt_file="p.jsonl", prompts="p.jsonl", params=PARAMS, microbatch=str(microbatch))
    reference = _outputs(_monolithic(tmp_path / "mono", MIXED, **common))
    job = write_job(tmp_path / "phased", MIXED, stages=stages, **common)
    ranks = 7 if "2" in stages else 4
    proc = run_cli("run", job, "-n", ranks, "--phases", phase, "--wait-timeout", "60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(_outputs(tmp_path / "phased/out/t.h5"), reference)
    assert f"in phases of {phase} units:" in proc.stdout
    if ranks == 4:  # 8 units (a unit holds one step count) in phases of 2: a load turn each, 4 turns a stage
        assert "in phases of 2 units: 15 turns" in proc.stdout, proc.stdout
    first = runs_of(tmp_path / "phased/out/t.h5")[0]
    assert first["status"] == "completed" and int(first["items_committed"]) == len(PROMPTS)


@pytest.mark.mpi
@pytest.mark.slow
def test_a_unit_that_fails_in_a_phase_is_recorded_and_the_rest_of_its_phase_goes_on(tmp_path):
    write_png(tmp_path / "job/frame.png")
    lines = [json.dumps({"prompt": f"a fox number {i}", "image": "broken.png" if i == 2 else "frame.png"})
             for i in range(6)]
    common = dict(prompt_file="p.jsonl", prompts="p.jsonl", model="builtin:tiny-wan-i2v",
                  params="{steps: 2, height: 32, width: 32, frames: 5}")
    job = write_job(tmp_path / "job", lines, **common)
    undecodable_png(tmp_path / "job/broken.png")
    proc = run_cli("run", job, "-n", "4", "--phases", "4", "--wait-timeout", "60")
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "item 2" in proc.stderr and "encode" in proc.stderr and "Traceback" not in proc.stderr
    with h5py.File(tmp_path / "job/out/t.h5", "r") as f:
        assert f["done"][...].tolist() == [True, True, False, True, True, True]
    (tmp_path / "mono").mkdir()
    write_png(tmp_path / "mono/frame.png")
    (tmp_path / "mono/broken.png").write_bytes((tmp_path / "job/broken.png").read_bytes())
    reference = _outputs(_monolithic(tmp_path / "mono", lines, **common), "videos")
    videos = _outputs(tmp_path / "job/out/t.h5", "videos")
    for item in (0, 1, 3, 4, 5):
        np.testing.assert_array_equal(videos[item], reference[item])


LONG = [f"phased run item {i}" for i in range(24)]
LONG_PARAMS = "{steps: 6, guidance: 4.0, height: 64, width: 64}"


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> np.ndarray:
    """The long job's images from one process, once for the tests that cut a run short."""
    return _outputs(_monolithic(tmp_path_factory.mktemp("whole"), LONG, params=LONG_PARAMS))


def _resume_is_exactly_once_and_identical(job: Path, output: Path, kept: int, reference: np.ndarray) -> None:
    again = run_cli("run", job, "-n", "4", "--phases", "3", "--wait-timeout", "60")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"({len(LONG) - kept} this run" in again.stdout
    with h5py.File(output, "r") as f:
        assert f["done"][...].all()
    np.testing.assert_array_equal(_outputs(output), reference)


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("victim", [2], ids=["denoise"])
def test_a_killed_rank_of_a_phased_run_is_named_once_and_its_output_resumes(tmp_path, whole, victim):
    job = write_job(tmp_path / "cut", LONG, params=LONG_PARAMS)
    output = tmp_path / "cut/out/t.h5"
    with running("run", job, "-n", "4", "--phases", "3", "--wait-timeout", "60") as proc:
        wait_until(proc, lambda: done_count(output) >= 3, "three committed items")
        os.kill(rank_pids(str(job))[victim], signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = proc.communicate(timeout=120)
        noticed = time.monotonic() - killed_at
    assert proc.returncode == 1, err[-3000:]
    errors = error_lines(err)
    assert len(errors) == 1, err[-3000:]
    stage = {2: "denoise", 3: "decode"}[victim]
    assert f"rank {victim} on " in errors[0] and f"stage {stage}" in errors[0] and "died" in errors[0], errors[0]
    assert noticed < 30, f"the failure took {noticed:.0f} s to surface"
    assert not rank_pids(str(job)), "ranks left running"
    kept = done_count(output)
    assert 3 <= kept < len(LONG)
    _resume_is_exactly_once_and_identical(job, output, kept, whole)


@pytest.mark.mpi
@pytest.mark.slow
def test_a_drained_phased_run_commits_what_it_dispatched_and_resumes(tmp_path, whole):
    job = write_job(tmp_path / "cut", LONG, params=LONG_PARAMS)
    output = tmp_path / "cut/out/t.h5"
    with running("run", job, "-n", "4", "--phases", "3", "--wait-timeout", "60") as proc:
        wait_until(proc, lambda: done_count(output) >= 3, "three committed items")
        for pid in rank_pids(str(job)).values():  # as `sbatch --signal=USR1@T` does: every rank gets it
            os.kill(pid, signal.SIGUSR1)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-3000:]
    kept = done_count(output)
    assert 3 <= kept < len(LONG), kept
    first = runs_of(output)[0]
    assert first["status"] == "preempted" and int(first["items_committed"]) == kept
    _resume_is_exactly_once_and_identical(job, output, kept, whole)
