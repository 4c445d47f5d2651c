"""A stage added by touching two files (tests/plugins/posterize_stage.py, and the entry point an
install writes): it runs staged, its ranks move elastically, its outputs land in the output
bit-identical to the one-process run, and every table names it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from support import REPO, builtin_model, write_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

PLUGINS = REPO / "tests" / "plugins"
STAGES = ["encode", "denoise", "decode", "posterize"]


@pytest.fixture
def plugin_env(tmp_path, model_cache) -> tuple[dict, Path]:
    """An environment where the plugin is installed (its entry point metadata on the path), and
    a model folder for its pipeline class."""
    site = tmp_path / "site"
    info = site / "posterize_stage-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: posterize-stage\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[onepiece_hpc.adapters]\nposterize = posterize_stage:PosterizedAdapter\n",
                                           encoding="utf-8")
    folder = tmp_path / "posterized-sd"
    shutil.copytree(builtin_model(model_cache, "tiny-sd"), folder)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index["_class_name"] = "PosterizedStableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    path = os.pathsep.join([str(PLUGINS), str(site), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)}, folder


def _onepiece(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onepiece_hpc.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


def _images(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        assert f["done"][...].all()
        return f["outputs/images"][...]


def test_a_plugin_stage_runs_staged_moves_and_lands_in_the_output(tmp_path, plugin_env):
    env, folder = plugin_env
    prompts = [f"a lighthouse, study {i}" for i in range(16)]
    common = dict(model=str(folder), params="{steps: 4, guidance: 4.0, height: 64, width: 64}")
    mono = write_job(tmp_path / "mono", prompts, **common)
    done = _onepiece(env, "run", mono, "--monolithic")
    assert done.returncode == 0, done.stderr[-3000:]
    staged = write_job(tmp_path / "staged", prompts, stages="{encode: 2, denoise: 1, decode: 1, posterize: 1}",
                       policy="{name: adaptive, interval_s: 0.3, cooldown_s: 0.5, margin: 0.0}", **common)
    done = _onepiece(env, "run", staged, "-n", 6, "--wait-timeout", 120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "posterize" in done.stdout  # the summary table has a row for it
    reference, got = _images(tmp_path / "mono/out/t.h5"), _images(tmp_path / "staged/out/t.h5")
    np.testing.assert_array_equal(got, reference)
    assert not (got & ~np.uint8(0xE0)).any() and got.any()  # posterized, and not blank
    with h5py.File(tmp_path / "staged/out/t.h5", "r") as f:
        assert [s.decode() if isinstance(s, bytes) else s for s in f["timings"].attrs["stages"]] == [*STAGES, "write"]
    info = json.loads(_onepiece(env, "inspect", tmp_path / "staged/out/t.h5", "--json").stdout)
    assert set(STAGES) <= set(info["mean_seconds_per_item"]), info.keys()
    telemetry = info["telemetry"][-1]
    assert telemetry["moves"] >= 1, telemetry  # ranks moved between the plugin's stages
    assert telemetry["stages"] == STAGES, telemetry
    # the run's measured costs drive a simulation of the plugin's four stages
    simulated = _onepiece(env, "simulate", "--job", staged, "--profile", tmp_path / "staged/out/t.h5", "-r", 8, "--json")
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    records = [json.loads(line) for line in simulated.stdout.splitlines()]
    assert [r["stages"] for r in records] == [STAGES] * 3 and all(r["stage_units"] == [r["units"]] * 4 for r in records)


def test_stages_that_the_pipeline_does_not_have_are_refused_naming_its_stages(tmp_path, plugin_env):
    env, folder = plugin_env
    job = write_job(tmp_path, ["a"], model=str(folder), stages="{encode: 1, denoise: 1, posterise: 1}")
    done = _onepiece(env, "run", job, "-n", 5)
    assert done.returncode == 2, done.stderr
    assert "'posterise'" in done.stderr and "did you mean 'posterize'" in done.stderr
    assert "encode, denoise, decode, posterize" in done.stderr and "Traceback" not in done.stderr
