"""One failing item doesn't stop the job: its unit is recorded as failed (with its error, stage
and rank), the run goes on and ends with exit 4 naming it; a plain run leaves it be, --retry-failed
generates it again; a stage that fails unit after unit still stops the job (exit 1). The rule
behind that and the store's failure records are tested in test_failure_records.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from support import (
    builtin_model, i2v_job, invoke, run_cli, running, runs_of, tamper, undecodable_png, wait_until, write_job,
    write_png,
)


# -- jobs ------------------------------------------------------------------------------------------
def _done(output: Path) -> np.ndarray:
    with h5py.File(output, "r") as f:
        return f["done"][...].astype(bool)


def _videos(output: Path) -> np.ndarray:
    with h5py.File(output, "r") as f:
        return f["outputs/videos"][...]


def _inspect(output: Path) -> dict:
    result = invoke("inspect", output, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


# -- the reference path ----------------------------------------------------------------------------
@pytest.mark.slow
def test_an_image_that_fails_to_decode_fails_only_its_item(tmp_path):
    job = i2v_job(tmp_path, 20, {12: "broken.png"})
    undecodable_png(tmp_path / "broken.png")
    output = tmp_path / "out/t.h5"

    result = run_cli("run", job, "--monolithic")
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert "19/20 items done, 1 failed (19 this run" in result.stdout
    assert "1 item(s) failed" in result.stderr
    assert "item 12 (prompt file line 13): encode on monolithic: OSError: broken data stream" in result.stderr
    assert "--monolithic --retry-failed" in result.stderr
    assert _done(output).tolist() == [i != 12 for i in range(20)]

    info = _inspect(output)
    assert info["items_done"] == 19 and info["items_failed"] == 1 and not info["complete"]
    [failure] = info["failed"]
    assert (failure["start"], failure["stop"], failure["stage"], failure["rank"]) == (12, 13, "encode", "monolithic")
    assert "broken data stream" in failure["error"]
    assert "item 12: encode on monolithic, run 0: OSError: broken data stream" in invoke("inspect", output).out

    verified = invoke("verify", output, "--json")
    assert verified.code == 1
    assert json.loads(verified.out)["failed"] == [12]
    assert "failed     1 of them failed when generated: 12; fix: onepiece run JOB --retry-failed" in \
        invoke("verify", output).out
    exported = invoke("export", output, tmp_path / "mp4")
    assert exported.code == 0, exported.err
    manifest = [json.loads(line) for line in (tmp_path / "mp4/manifest.jsonl").read_text().splitlines()]
    assert [entry["index"] for entry in manifest] == [i for i in range(20) if i != 12]

    again = invoke("run", job, "--monolithic")  # a failed item is settled: a plain run leaves it be
    assert again.code == 4 and "(0 this run" in again.out and "item 12 (prompt file line 13)" in again.err
    assert runs_of(output)[-1]["status"] == "completed"


def test_retry_failed_generates_only_the_failed_items_bit_identical(tmp_path, monkeypatch):
    """The image of item 12 is gone when it is encoded (moved away after the job was planned, as on a
    shared file system during a long job); once it is back, --retry-failed makes exactly that item."""
    import onepiece_hpc.runtime.prepare as preparing

    job = i2v_job(tmp_path / "job", 20, {12: "frame-12.png"})
    image = write_png(tmp_path / "job/frame-12.png", shift=3)
    kept = tmp_path / "kept.png"
    planned = preparing.prepare

    def prepare_then_lose_the_image(*args, **kwargs):
        prepared = planned(*args, **kwargs)
        image.rename(kept)
        return prepared

    monkeypatch.setattr(preparing, "prepare", prepare_then_lose_the_image)
    first = invoke("run", job, "--monolithic")
    monkeypatch.undo()
    output = tmp_path / "job/out/t.h5"
    assert first.code == 4, first.err
    assert "item 12 (prompt file line 13): encode on monolithic: FileNotFoundError" in first.err
    assert "frame-12.png" in first.err
    assert _done(output).sum() == 19

    kept.rename(image)
    tamper(output, [3], done=0)  # and item 3 is missing (a lost flag): not a failed item, so not retried
    retried = invoke("run", job, "--monolithic", "--retry-failed")
    assert retried.code == 0, retried.err
    assert "(1 this run" in retried.out
    assert _done(output).tolist() == [i != 3 for i in range(20)]
    info = _inspect(output)
    assert info["items_failed"] == 0 and info["failed"] == []

    rest = invoke("run", job, "--monolithic")
    assert rest.code == 0 and "(1 this run" in rest.out
    clean = i2v_job(tmp_path / "clean", 20, {12: "frame-12.png"})
    write_png(tmp_path / "clean/frame-12.png", shift=3)
    assert invoke("run", clean, "--monolithic").code == 0
    np.testing.assert_array_equal(_videos(output), _videos(tmp_path / "clean/out/t.h5"))
    assert invoke("verify", output).code == 0


def test_a_unit_fails_as_a_whole_and_the_other_units_keep_their_bits(tmp_path):
    job = i2v_job(tmp_path / "job", 6, {2: "broken.png", 3: "broken.png"}, microbatch=2)  # units 0-1, 2-3, 4-5
    undecodable_png(tmp_path / "job/broken.png")
    result = invoke("run", job, "--monolithic")
    assert result.code == 4, result.err
    assert "2 item(s) failed" in result.err
    assert "items 2..3 (prompt file lines 3..4): encode on monolithic: OSError" in result.err
    output = tmp_path / "job/out/t.h5"
    assert _done(output).tolist() == [True, True, False, False, True, True]
    [failure] = _inspect(output)["failed"]
    assert (failure["start"], failure["stop"]) == (2, 4)

    clean = i2v_job(tmp_path / "clean", 6, microbatch=2)
    assert invoke("run", clean, "--monolithic").code == 0
    ours, theirs = _videos(output), _videos(tmp_path / "clean/out/t.h5")
    np.testing.assert_array_equal(ours[[0, 1, 4, 5]], theirs[[0, 1, 4, 5]])


def _broken_model(folder: Path) -> Path:
    """A tiny SD folder that loads but fails every unit: its tokenizer pads prompts past the text encoder's
    positions."""
    shutil.copytree(builtin_model(Path(os.environ["ONEPIECE_CACHE"]), "tiny-sd"), folder)
    config = folder / "tokenizer/tokenizer_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"model_max_length": 200}))
    return folder


def test_a_model_that_fails_every_item_stops_the_job_after_three_units(tmp_path):
    _broken_model(tmp_path / "broken")
    job = write_job(tmp_path, [f"a cat number {i}" for i in range(10)], model="broken")
    result = invoke("run", job, "--monolithic")
    assert result.code == 1, result.err
    assert "the stage itself is failing: the first 3 units this run tried all failed" in result.err
    assert "unit 0 (item 0), stage encode on monolithic" in result.err
    assert "Sequence length must be less than max_position_embeddings" in result.err
    output = tmp_path / "out/t.h5"
    info = _inspect(output)
    assert info["items_done"] == 0 and info["items_failed"] == 0, "a stage's failure is not the items'"
    assert runs_of(output)[-1]["status"] == "failed"


# -- the staged runtime ------------------------------------------------------------------------------
def test_staged_one_bad_image_in_twenty_gives_nineteen_outputs_exit_4_and_a_retry_completes_it(tmp_path):
    """Item 12's image can't be decoded; item 19's is gone when it is encoded (moved away after rank 0
    planned, as on a shared file system) and back for the retry. The staged run records both with
    the encode rank that hit them, goes on, exits 4; --retry-failed makes item 19 and leaves 12 (its
    image is still broken) failed; every output equals the one-process run's."""
    folder = tmp_path / "job"
    job = i2v_job(folder, 20, {12: "broken.png", 19: "late.png"})
    undecodable_png(folder / "broken.png")
    late = write_png(folder / "late.png", shift=5)
    output = folder / "out/t.h5"
    with running("run", job, "-n", "4", "--wait-timeout", "120") as proc:
        wait_until(proc, output.exists, "rank 0's plan (the output's index)")
        late.rename(tmp_path / "late.png")
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 4, err[-3000:]
    assert "Traceback" not in err
    assert "2 item(s) failed" in err
    assert "item 12 (prompt file line 13): encode on rank 1: OSError: broken data stream" in err
    assert "item 19 (prompt file line 20): encode on rank 1: FileNotFoundError" in err
    assert "-n 4 --retry-failed" in err
    assert _done(output).tolist() == [i not in (12, 19) for i in range(20)]

    (tmp_path / "late.png").rename(late)
    retried = run_cli("run", job, "-n", "4", "--retry-failed", "--wait-timeout", "120")
    assert retried.returncode == 4, retried.stderr[-3000:]  # item 12 failed again: still failed
    assert "(1 this run" in retried.stdout
    assert _done(output).tolist() == [i != 12 for i in range(20)]
    assert [(f["start"], f["stop"]) for f in _inspect(output)["failed"]] == [(12, 13)]

    reference = i2v_job(tmp_path / "reference", 20, {12: "broken.png", 19: "late.png"})
    undecodable_png(tmp_path / "reference/broken.png")
    write_png(tmp_path / "reference/late.png", shift=5)
    assert invoke("run", reference, "--monolithic").code == 4
    np.testing.assert_array_equal(_videos(output), _videos(tmp_path / "reference/out/t.h5"))


def test_staged_a_model_that_fails_every_item_stops_the_job(tmp_path):
    _broken_model(tmp_path / "broken")
    job = write_job(tmp_path, [f"a cat number {i}" for i in range(10)], model="broken")
    result = run_cli("run", job, "-n", "4", "--wait-timeout", "120")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "the stage itself is failing: the first 3 units this run tried all failed" in result.stderr
    assert "stage encode on rank 1" in result.stderr
    assert _inspect(tmp_path / "out/t.h5")["items_failed"] == 0
