"""Outputs written by the previous release (format 2, one file) stay readable: inspect, export,
verify and merge read them; a run refuses to add to one, naming what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from support import invoke, write_job

OLD = Path(__file__).parent / "data/format2-tiny.h5"  # made by the release before format 3 (3 items, 32 px)


def test_format2_output_is_inspected_exported_verified_and_merged(tmp_path):
    old = shutil.copy(OLD, tmp_path / "old.h5")
    info = json.loads(invoke("inspect", old, "--json").out)
    assert info["format_version"] == 2 and info["items_done"] == info["items_total"] == 3
    assert info["runs"][0]["status"] == "completed"
    exported = invoke("export", old, tmp_path / "png")
    assert exported.code == 0, exported.err
    with h5py.File(old, "r") as f:
        stored = f["outputs/images"][...]
    for index in range(3):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"png/00000{index}.png")), stored[index])
    verified = invoke("verify", old)
    assert verified.code == 0 and "carry no digest" in verified.out
    merged = invoke("merge", old, "-o", tmp_path / "merged.h5")
    assert merged.code == 0, merged.err
    assert json.loads(invoke("inspect", tmp_path / "merged.h5", "--json").out)["items_done"] == 3


def test_a_run_does_not_add_to_a_format2_output(tmp_path):
    job = write_job(tmp_path, ["a harbour at dawn"], output="old.h5")
    shutil.copy(OLD, tmp_path / "old.h5")
    before = (tmp_path / "old.h5").read_bytes()
    result = invoke("run", job, "--monolithic")
    assert result.code == 2 and "format 2" in result.err and "nothing was changed" in result.err
    assert (tmp_path / "old.h5").read_bytes() == before and not (tmp_path / "old.h5.d").exists()
