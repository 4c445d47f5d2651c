"""A workflow (tiny SDXL -> tiny Wan image-to-video) as one staged job: over real MPI ranks and in
one process its videos, and the images it keeps, equal the two plain diffusers pipelines chained
by hand bit for bit; its stages are the steps' own, named by step, in every table."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from support import invoke, leaked_segments, run_cli, runs_of, shm_segments, telemetry_of
from workflow_support import PROMPTS, by_hand, outputs_of, workflow_job

pytestmark = [pytest.mark.mpi, pytest.mark.slow, pytest.mark.timeout(600)]

STAGES = ["image_encode", "image_denoise", "image_decode", "video_encode", "video_denoise", "video_decode"]


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """The chain done by hand, once for the tests here."""
    from onepiece_hpc import environment

    return by_hand(environment.cache_dir())


def test_staged_workflow_equals_the_two_pipelines_chained_by_hand(tmp_path, hand):
    job = workflow_job(tmp_path)
    before = shm_segments()
    proc = run_cli("run", job, "-n", "7", "--wait-timeout", "120", timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    images, videos = outputs_of(tmp_path / "out/t.h5")
    np.testing.assert_array_equal(images, hand[0], err_msg="the kept images are the first pipeline's outputs")
    np.testing.assert_array_equal(videos, hand[1], err_msg="the videos are the second pipeline's, from those images")
    assert len({v.tobytes() for v in videos}) == len(PROMPTS), "items must differ"
    for stage in STAGES:
        assert stage in proc.stdout, f"the summary table names {stage}"
    record = telemetry_of(tmp_path / "out/t.h5")
    assert [s.decode() for s in record.stages["stage"]] == STAGES
    assert [int(n) for n in record.stages["units"]] == [len(PROMPTS)] * len(STAGES)
    with h5py.File(tmp_path / "out/t.h5", "r") as f:
        assert list(f["timings"].attrs["stages"]) == [*STAGES, "write"]
        assert np.isfinite(f["timings"][...]).all()
    run = runs_of(tmp_path / "out/t.h5")[0]
    assert run["status"] == "completed" and int(run["items_committed"]) == len(PROMPTS)
    assert not leaked_segments(before), "shared-memory segments left behind"


def test_one_process_workflow_equals_the_pipelines_chained_by_hand(tmp_path, hand):
    job = workflow_job(tmp_path)
    result = invoke("run", job, "--monolithic")
    assert result.code == 0, result.err
    images, videos = outputs_of(tmp_path / "out/t.h5")
    np.testing.assert_array_equal(images, hand[0])
    np.testing.assert_array_equal(videos, hand[1])
    again = invoke("run", job, "--monolithic")
    assert again.code == 0 and "(0 this run" in again.out, "a finished workflow is resumed, never redone"


MANY = [f"batched item {i}: a {c} kite over a beach" for i, c in enumerate(
    ["red", "blue", "green", "white", "black", "tiny", "huge", "round", "tall", "old"])]
#: two ranks on the cheap image encode, and a policy that moves ranks as soon as a move pays
SKEWED = "{image_encode: 2}"
EAGER = "{name: adaptive, interval_s: 0.3, cooldown_s: 0.5, margin: 0.0}"


def test_batched_workflow_is_the_same_whatever_the_placement_and_moves(tmp_path):
    """Two items a unit, each with its own condition image: staged (ranks moving between the chain's
    stages as the load asks) and in one process, the same bits (the units are the plan's)."""
    mono = workflow_job(tmp_path / "mono", MANY, microbatch=2, keep=False)
    assert invoke("run", mono, "--monolithic").code == 0
    staged = workflow_job(tmp_path / "staged", MANY, microbatch=2, keep=False, stages=SKEWED,
                          extra=f"policy: {EAGER}\n")
    proc = run_cli("run", staged, "-n", "8", "--wait-timeout", "120", timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with h5py.File(tmp_path / "mono/out/t.h5", "r") as a, h5py.File(tmp_path / "staged/out/t.h5", "r") as b:
        assert a["done"][...].all() and b["done"][...].all()
        np.testing.assert_array_equal(a["outputs/videos"][...], b["outputs/videos"][...])
        assert "image" not in b["outputs"], "a step not kept leaves no dataset"
        assert len(set(b["items"]["unit"])) == len(MANY) // 2
    assert "image_encode 2 (ranks 1-2)" in proc.stdout
    moves = telemetry_of(tmp_path / "staged/out/t.h5").moves
    assert len(moves) >= 1, proc.stdout
    assert {m["source"].decode() for m in moves} | {m["target"].decode() for m in moves} <= set(STAGES)
