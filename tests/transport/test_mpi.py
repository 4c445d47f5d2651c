"""Multi-process tests under mpiexec: every run has its own time limit, so a hang fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MPIEXEC = Path(sys.executable).with_name("mpiexec")

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120),
              pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to this Python")]


def _mpiexec(ranks: int, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([str(MPIEXEC), "-n", str(ranks), sys.executable,
                           str(HERE / "mpi_worker.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("ranks,fabric", [(2, "shm"), (4, "mpi-rma"), (8, "shm"), (8, "auto"),
                                          (4, "shm")])
def test_many_producers_to_many_consumers(ranks: int, fabric: str) -> None:
    result = _mpiexec(ranks, "many", fabric)
    assert result.returncode == 0, result.stdout + result.stderr
    producers = (ranks + 1) // 2
    assert f"OK {producers * 60} messages" in result.stdout


@pytest.mark.parametrize("fabric", ["shm", "mpi-rma"])
def test_stalled_consumer_gives_clear_error_within_deadline(fabric: str) -> None:
    result = _mpiexec(2, "stalled", fabric, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TIMEOUT no credit from consumer rank 1 " in result.stdout
    assert "within 1.5 s" in result.stdout
