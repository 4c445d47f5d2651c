"""A real one-host Slurm for the tests that need one, started once per session and stopped after.

slurm/local-cluster.sh installs the packages when they are missing (root with apt-get only) and
starts munged, MariaDB, slurmdbd, slurmctld and slurmd in a private folder on private ports.
Tests that need it skip, saying why, where that can't be done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from slurm_helpers import REPO

SCRIPT = REPO / "slurm" / "local-cluster.sh"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the local Slurm runs its daemons as root; run the suite as root (CI does) to include these tests"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "Slurm is not installed and there is no apt-get to install it (slurmctld, slurmd, munge, slurmdbd)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """SLURM_CONF of a running local cluster; skips with the reason when one can't be started."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "ONEPIECE_SLURM_DIR": str(tmp_path_factory.mktemp("slurm"))}
    install = subprocess.run(["bash", str(SCRIPT), "install"], env=env, capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        pytest.skip(f"could not install Slurm: {install.stderr.strip()[-400:]}")
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=60)
        pytest.skip(f"could not start the local Slurm: {up.stderr.strip()[-400:]}")
    conf = Path(env["ONEPIECE_SLURM_DIR"]) / "slurm.conf"
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield conf
    finally:
        os.environ.pop("SLURM_CONF", None)
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)

