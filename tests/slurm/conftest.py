"""A real one-host Slurm for the tests that need one, started once per session and stopped after.

slurm/local-cluster.sh installs the packages when they are missing (root with apt-get only) and
starts munged, MariaDB, slurmdbd, slurmctld and slurmd in a private folder on private ports.
Tests that need it skip, saying why, where that can't be done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from slurm_helpers import REPO

SCRIPT = REPO / "slurm" / "local-cluster.sh"


def pytest_collection_modifyitems(config, items) -> None:
    """The suite runs tests side by side (pytest-xdist, --dist loadgroup): the tests of one cluster
    run in one worker, one after the other, so that each cluster is started once and no two tests
    change the same cluster at once. The one-host and the multi-host cluster use different ports
    and run beside each other; tests that use neither (fake Slurm commands) go wherever."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & {"hosts", "hosts_cluster"}:
            item.add_marker(pytest.mark.xdist_group("slurm-hosts"))
        elif "slurm_cluster" in used:
            item.add_marker(pytest.mark.xdist_group("slurm"))


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



#: the multi-host cluster's ports (the one-host cluster's are 16817-16820): both can be up at once
HOSTS_PORTS = "16917"
HOSTS = 4


class HostsCluster:
    """A running cluster of `HOSTS` hosts on this machine (slurm/local-cluster.sh up --hosts) and its
    faults: kill, revive, cut, heal, slow."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.conf = Path(env["ONEPIECE_SLURM_DIR"]) / "slurm.conf"

    def script(self, *args: str) -> str:
        done = subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"local-cluster.sh {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    def states(self) -> dict[str, str]:
        """Each host's state as the script sees it: up, killed, cut or slow."""
        return {name: state for name, _, state in (line.split() for line in self.script("hosts").splitlines())}

    def restore(self, deadline_s: float = 150.0) -> None:
        """Every host up, its link whole and fast, and idle in Slurm's eyes (after a test that hurt
        one: Slurm marks a host it lost DOWN, and a later test must find every host there)."""
        for name, state in self.states().items():
            if state in ("cut", "slow"):
                self.script("heal", name)
            elif state == "killed":
                self.script("revive", name)
        end = time.monotonic() + deadline_s
        while True:
            listed = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True,
                                    timeout=30, env={**self.env, "SLURM_CONF": str(self.conf)}).stdout
            states = dict(line.split() for line in listed.splitlines() if line.strip())
            if len(states) == HOSTS and all(state == "idle" for state in states.values()):
                return
            for name, state in states.items():
                if state.rstrip("*~#$@^-") in ("down", "drained", "draining", "fail"):
                    subprocess.run(["scontrol", "update", f"nodename={name}", "state=resume"], capture_output=True,
                                   timeout=30, env={**self.env, "SLURM_CONF": str(self.conf)})
            if time.monotonic() > end:
                pytest.fail(f"the hosts were not all idle again within {deadline_s:.0f} s: {states}")
            time.sleep(1.0)


@pytest.fixture(scope="session")
def hosts_cluster(tmp_path_factory):
    """A Slurm of separate hosts (own network, hostname, /tmp and /dev/shm each; the test folders
    shared as on a cluster file system); skips with the reason when one can't be started."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("the multi-host cluster needs iproute2 (ip) and util-linux (unshare, nsenter)")
    probe = subprocess.run(["unshare", "--net", "--uts", "--mount", "--ipc", "--pid", "--fork", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:  # a container that forbids namespaces, even to root
        pytest.skip(f"this machine does not let root make namespaces for the hosts: {probe.stderr.strip()[-300:]}")
    env = {**os.environ, "ONEPIECE_SLURM_DIR": str(tmp_path_factory.mktemp("hosts")),
           "ONEPIECE_SLURM_PORTS": HOSTS_PORTS}
    install = subprocess.run(["bash", str(SCRIPT), "install"], env=env, capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        pytest.skip(f"could not install Slurm: {install.stderr.strip()[-400:]}")
    up = subprocess.run(["bash", str(SCRIPT), "up", "--hosts", str(HOSTS), "--share",
                         str(tmp_path_factory.getbasetemp())], env=env, capture_output=True, text=True, timeout=180)
    if up.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)
        pytest.fail(f"could not start the multi-host cluster: {up.stderr.strip()[-2000:]}")
    try:
        yield HostsCluster(env)
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=180)


@pytest.fixture
def hosts(hosts_cluster):
    """The multi-host cluster for one test: Slurm clients point at it, and every host is whole again
    after the test, whatever it did to them."""
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(hosts_cluster.conf)
    try:
        yield hosts_cluster
    finally:
        hosts_cluster.restore()
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
