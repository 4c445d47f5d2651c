"""Slurm commands that are missing or fail: the error names the command and quotes its output."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from onepiece_hpc.slurm.commands import SlurmCommandError, run_slurm

REPO = Path(__file__).resolve().parents[2]


def _fake(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_a_missing_command_is_named_with_the_fix():
    with pytest.raises(SlurmCommandError, match=r"sbatch-missing not found on PATH.*local-cluster.sh"):
        run_slurm(["sbatch-missing", "--parsable"])


def test_a_failing_command_is_named_with_its_output(tmp_path):
    sacct = _fake(tmp_path, "sacct", 'echo "sacct: error: accounting storage is disabled" >&2; exit 1')
    with pytest.raises(SlurmCommandError) as err:
        run_slurm([str(sacct), "-j", "12"])
    assert "sacct failed with exit code 1" in str(err.value) and "accounting storage is disabled" in str(err.value)


def test_submit_without_sbatch_on_path_exits_2_naming_it(tmp_path):
    import subprocess

    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # Python, but no Slurm
    proc = subprocess.run([sys.executable, "-m", "onepiece_hpc.cli.main", "submit", str(REPO / "jobs/tiny.yaml"),
                           "-o", str(tmp_path / "t.h5")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "not found on PATH" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "t.h5").exists()
