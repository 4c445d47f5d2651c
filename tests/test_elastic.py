"""The elastic Node Manager with real MPI ranks: moves under load keep every item exactly once
and every output bit-identical; a rank killed in the middle of a move gives one clear error and
a resumable output."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest

from support import error_lines, invoke, run_cli, running, runs_of, telemetry_of, wait_until, write_job

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

# three encode ranks for a denoise-heavy batch: the policy must move some of them at once
SKEWED = "{encode: 3, denoise: 1, decode: 1}"
EAGER = "{name: adaptive, interval_s: 0.3, cooldown_s: 0.5, margin: 0.0}"


def _prompts(count: int) -> str:
    return "".join(json.dumps({"prompt": f"elastic item {i}", "steps": 6 if i < count // 2 else 1,
                               "guidance": 4.0 if i < count // 2 else 1.0}) + "\n" for i in range(count))


def _reference(folder: Path, lines: str) -> np.ndarray:
    job = write_job(folder, lines, prompt_file="p.jsonl", prompts="p.jsonl")
    assert invoke("run", job, "--monolithic").code == 0
    with h5py.File(folder / "out/t.h5", "r") as f:
        return f["outputs/images"][...]


def test_moves_under_load_keep_every_item_once_and_outputs_identical(tmp_path):
    lines = _prompts(24)
    job = write_job(tmp_path / "elastic", lines, prompt_file="p.jsonl", prompts="p.jsonl", stages=SKEWED,
                    policy=EAGER)
    proc = run_cli("run", job, "-n", "6", "--wait-timeout", "60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank moves" in proc.stdout
    with h5py.File(tmp_path / "elastic/out/t.h5", "r") as f:
        assert f["done"][...].all()
        images = f["outputs/images"][...]
    assert int(runs_of(tmp_path / "elastic/out/t.h5")[0]["items_committed"]) == 24
    moves = telemetry_of(tmp_path / "elastic/out/t.h5").moves
    assert len(moves) >= 1
    assert {m["source"].decode() for m in moves} >= {"encode"}
    assert all(m["cost_s"] >= 0 and m["reason"] for m in moves)
    np.testing.assert_array_equal(images, _reference(tmp_path / "mono", lines))
    # the run's measured service and load times drive a simulation of its job
    simulated = invoke("simulate", "--job", job, "--profile", tmp_path / "elastic/out/t.h5", "-r", "16", "--json")
    assert simulated.code == 0, simulated.err
    records = [json.loads(line) for line in simulated.out.splitlines()]
    assert {r["policy"] for r in records} == {"static-best", "adaptive", "oracle"}
    assert all(r["stages"] == ["encode", "denoise", "decode"] and r["stage_units"] == [r["units"]] * 3
               for r in records)


def _statuses(scratch: Path) -> list[dict]:
    found = []
    for path in scratch.glob("onepiece-run-*/status/rank-*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


def test_rank_killed_during_a_move_gives_a_clear_error_and_a_resumable_output(tmp_path):
    lines = _prompts(24)
    job = write_job(tmp_path / "cut", lines, prompt_file="p.jsonl", prompts="p.jsonl", stages=SKEWED, policy=EAGER)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}  # where the launcher keeps the ranks' status files
    with running("run", job, "-n", "6", "--wait-timeout", "60", env=env) as proc:
        victim = wait_until(proc, lambda: next((s for s in _statuses(scratch) if s["moving_to"]), None), "a move")
        os.kill(victim["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    errors = error_lines(err)
    assert len(errors) == 1, err[-3000:]
    assert f"rank {victim['rank']} on " in errors[0] and "moving to" in errors[0] and "died" in errors[0]
    again = run_cli("run", job, "-n", "6", "--wait-timeout", "60")
    assert again.returncode == 0, again.stderr[-3000:]
    with h5py.File(tmp_path / "cut/out/t.h5", "r") as f:
        assert f["done"][...].all()
        images = f["outputs/images"][...]
    np.testing.assert_array_equal(images, _reference(tmp_path / "mono", lines))
