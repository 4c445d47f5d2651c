"""Invariants 1 and 4 on the reference path: kill -9 midway, run again, every item exactly once
and bit-identical to an uninterrupted run; a different job is refused."""

from __future__ import annotations

import signal

import h5py
import numpy as np
import pytest

from support import done_count, invoke, running, wait_until, write_job

PROMPTS = [f"prompt number {i}, a landscape" for i in range(40)]
PARAMS = "{steps: 8, guidance: 5.0, height: 64, width: 64}"


def _start_and_interrupt(job, output, sig: int) -> int:
    """Start a real run, send `sig` once some but not all items are done; return its exit code."""
    with running("run", job, "--monolithic") as proc:
        wait_until(proc, lambda: 3 <= done_count(output) < len(PROMPTS) - 5, "a few committed items")
        proc.send_signal(sig)
        proc.wait(timeout=60)
    return proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_interrupted_run_resumes_exactly_once_and_identical(tmp_path, sig):
    job = write_job(tmp_path / "cut", PROMPTS, params=PARAMS)
    output = tmp_path / "cut/out/t.h5"
    code = _start_and_interrupt(job, output, sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    kept = done_count(output)
    assert 3 <= kept < len(PROMPTS)

    resumed = invoke("run", job, "--monolithic")
    assert resumed.code == 0, resumed.err
    assert f"({len(PROMPTS) - kept} this run" in resumed.out, "the resume must generate only missing items"

    whole = write_job(tmp_path / "whole", PROMPTS, params=PARAMS)
    assert invoke("run", whole, "--monolithic").code == 0
    with h5py.File(output, "r") as cut, h5py.File(tmp_path / "whole/out/t.h5", "r") as ref:
        assert cut["done"][...].all()
        np.testing.assert_array_equal(cut["outputs/images"][...], ref["outputs/images"][...])
        runs = cut["runs"][...]
        assert len(runs) == 2
        first = runs[0]["status"].decode()
        assert first == ("running" if sig == signal.SIGKILL else "interrupted")
        assert runs[1]["status"].decode() == "completed"
        assert int(runs[1]["items_committed"]) == len(PROMPTS) - kept

    again = invoke("run", job, "--monolithic")
    assert again.code == 0 and "(0 this run" in again.out


def test_partial_unit_is_completed_without_rewriting_done_items(tmp_path):
    job = write_job(tmp_path, PROMPTS[:4], params=PARAMS, microbatch="2")
    assert invoke("run", job, "--monolithic").code == 0
    output = tmp_path / "out/t.h5"
    with h5py.File(output, "r+") as f:
        reference = f["outputs/images"][...]
        f["done"][1] = 0              # as if the run had died between two flags of one unit
        f["outputs/images"][1] = 0
        f["outputs/images"][0] = 255  # a done item must never be written again
    result = invoke("run", job, "--monolithic")
    assert result.code == 0 and "(1 this run" in result.out
    with h5py.File(output, "r") as f:
        np.testing.assert_array_equal(f["outputs/images"][1], reference[1])
        assert (f["outputs/images"][0] == 255).all()
