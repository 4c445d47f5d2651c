"""Rank 0's own calls that meet a dead host (a ring's credit, a control message): the job ends with
the liveness verdict naming the lost host, its units in flight and how to resume, never with the
transport error first; where the peer is heard from again, the error is the verdict.

Rank 0's real loop (runtime/node_manager.py) runs here on a real output, over a stand-in control
plane, pulse listener and ring, so the race comes out the same every time: the transport raises
well before the heartbeat timeout passes, while the lost host's ranks are simply silent.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from onepiece_hpc.runtime.liveness import Verdict
from onepiece_hpc.runtime.messages import WorkRequest
from onepiece_hpc.runtime.peers import RankInfo
from onepiece_hpc.transport.errors import PeerInfo, PeerUnreachable

from support import write_job

pytestmark = pytest.mark.timeout(120)

HEARTBEAT_S = 0.5
KILL_AFTER_S = 0.5  # the host dies this long into the run
TIMEOUT_S = 60.0  # the heartbeat deadline: each verdict here must come long before it
STAGES = "{encode: 1, denoise: 3, decode: 1}"  # rank 1 encodes, 2..4 denoise, 5 decodes (its outputs commit)
#: rank 0 and the encode rank on h1, two ranks on each of h2 and h3
HOSTS = ["h1", "h1", "h2", "h2", "h3", "h3"]


class Cluster:
    """Six ranks as rank 0 sees them: control messages and pulses. `KILL_AFTER_S` after it is made,
    the ranks in `dying` fall silent; the calls rank 0 makes to one of them then raise
    PeerUnreachable, as MPI does once the dead host's connection is closed."""

    def __init__(self, hosts: list[str], dying: set[int], requests: int = 3) -> None:
        self.peers = [RankInfo(rank, host, os.getpid()) for rank, host in enumerate(hosts)]
        self.dying = dying
        self.pulse = SimpleNamespace(heard_at={}, listened_until=time.monotonic)
        self.killed_at = time.monotonic() + KILL_AFTER_S
        self.failed_at: float | None = None  # when rank 0's first call to a dead rank failed
        self.requests = requests             # the encode rank asks for this many units
        self.late_beats: float | None = None  # a beat of the dying ranks, read this long after the failure
        self.sent: list[tuple[int, object]] = []

    def killed(self) -> bool:
        return time.monotonic() >= self.killed_at

    def dead(self, rank: int) -> bool:
        return rank in self.dying and self.killed()

    def unreachable(self, rank: int, what: str) -> PeerUnreachable:
        if self.failed_at is None:
            self.failed_at = time.monotonic()
        peer = self.peers[rank]
        return PeerUnreachable(f"rank {rank} (host {peer.host}, pid {peer.pid}) can't be reached over {what} "
                               "(Connection reset by peer); its host died or its link is down",
                               PeerInfo(rank, peer.host, peer.pid))

    # the control plane's two calls
    def poll(self, tag: int, source: int = -1) -> list[tuple[int, object]]:
        now = time.monotonic()
        for peer in self.peers[1:]:
            if not self.dead(peer.rank):
                self.pulse.heard_at[peer.rank] = now
        if self.failed_at is not None and self.late_beats is not None:  # MPI's queue, read a moment late
            for rank in self.dying:
                self.pulse.heard_at[rank] = self.failed_at + self.late_beats
            self.late_beats = None
        if self.requests and not self.dead(1):
            self.requests -= 1
            return [(1, WorkRequest(1))]
        return []

    def send(self, rank: int, message, tag: int) -> None:
        if self.dead(rank):
            raise self.unreachable(rank, "MPI")
        self.sent.append((rank, message))


class Ring:
    """Rank 5's ring at rank 0: nothing arrives; once rank 5 is dead, the credit rank 0 writes
    back for the message that was in the ring meets the dead host. `once`: the credit fails once
    when the kill comes, though rank 5 lives (a link that failed for a moment)."""

    def __init__(self, cluster: Cluster, once: bool = False) -> None:
        self.cluster, self.once = cluster, once

    def try_receive(self):
        if self.cluster.dead(5) or (self.once and self.cluster.killed() and self.cluster.failed_at is None):
            raise self.cluster.unreachable(5, "mpi-rma")
        return None


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unreachable")
    return write_job(folder, [f"a lighthouse, study {i}" for i in range(8)], stages=STAGES)


def run_rank_0(job, tmp_path, model_cache, cluster: Cluster, ring: Ring | None = None):
    """Rank 0's loop until it ends: (its JobFailed, seconds from the kill, verdicts its watch gave)."""
    from onepiece_hpc.planning.layout import plan_layout
    from onepiece_hpc.runtime.node_manager import JobFailed, NodeManager
    from onepiece_hpc.runtime.prepare import prepare
    from onepiece_hpc.transport import WaitPolicy

    prepared = prepare(job, tmp_path / "out.h5", model_cache)
    layout = plan_layout(prepared.job, len(cluster.peers), prepared.model.adapter.topology)
    assert layout.stage_of(5) == "decode" and layout.stage_of(1) == "encode"
    channels = SimpleNamespace(inbound={5: SimpleNamespace(consumer=ring or Ring(cluster))})
    watched: list[tuple[Verdict, float]] = []
    manager = NodeManager(prepared, layout, channels, cluster, cluster.peers, WaitPolicy(timeout_s=30.0), TIMEOUT_S,
                          mode="test", on_blocked=lambda verdict, blocked: watched.append((verdict, blocked)),
                          heartbeat_s=HEARTBEAT_S, pulse=cluster.pulse)
    cluster.killed_at = time.monotonic() + KILL_AFTER_S  # from here: preparing the job may take a while under load
    with pytest.raises(JobFailed) as failed:
        manager.run()
    return failed.value, time.monotonic() - cluster.killed_at, watched


def test_a_credit_write_to_a_dead_host_ends_in_the_verdict_naming_the_host(job, tmp_path, model_cache):
    cluster = Cluster(HOSTS, dying={4, 5})
    failed, after_s, watched = run_rank_0(job, tmp_path, model_cache, cluster)
    message = str(failed)
    assert message.startswith("host h3 is lost: every rank on it died at once (ranks 4 (denoise), 5 (decode): "
                              "no heartbeat for"), message
    assert failed.lost_hosts == ("h3",)
    assert "failed after it, talking to it: ranks 0" in message  # rank 0's own write, blaming rank 5
    assert "Units in flight, not committed: unit 0 (items 0..0), unit 1 (items 1..1), unit 2 (items 2..2)" in message
    assert message.endswith(f"Finished items are kept in {tmp_path / 'out.h5'}; run the same command again to resume")
    assert "PeerUnreachable" not in message.split(";")[0]
    assert cluster.failed_at is not None and after_s < TIMEOUT_S / 2  # the settling, not the heartbeat deadline
    assert watched == []


def test_a_heartbeat_read_just_after_the_failure_does_not_make_the_dead_host_live(job, tmp_path, model_cache):
    """The dead ranks' last beats were sent before the host died, but rank 0 reads them from MPI's
    queue a moment after its write failed: they are not news of the ranks."""
    cluster = Cluster(HOSTS, dying={4, 5})
    cluster.late_beats = 0.05
    failed, _, _ = run_rank_0(job, tmp_path, model_cache, cluster)
    assert failed.lost_hosts == ("h3",), str(failed)
    assert str(failed).startswith("host h3 is lost: every rank on it died at once (ranks 4 (denoise), 5 (decode)")


def test_a_control_message_to_a_dead_host_ends_in_the_same_verdict(job, tmp_path, model_cache):
    """The encode rank and the decode rank share h3: rank 0's next grant to the encode rank (a
    control message, over MPI) meets the dead host first."""
    hosts = ["h1", "h3", "h2", "h2", "h1", "h3"]
    cluster = Cluster(hosts, dying={1, 5}, requests=10**6)
    failed, after_s, watched = run_rank_0(job, tmp_path, model_cache, cluster)
    message = str(failed)
    assert message.startswith("host h3 is lost: every rank on it died at once (ranks 1 (encode), 5 (decode)"), message
    assert failed.lost_hosts == ("h3",)
    assert after_s < TIMEOUT_S / 2 and watched == []


def test_a_peer_heard_from_again_makes_the_transport_error_the_verdict(job, tmp_path, model_cache):
    """The write to rank 5 failed but rank 5 (and its host) still pulse: its host is not lost, and
    rank 0's error, naming the peer, is the job's."""
    cluster = Cluster(HOSTS, dying=set())
    failed, after_s, _ = run_rank_0(job, tmp_path, model_cache, cluster, Ring(cluster, once=True))
    message = str(failed)
    assert message.startswith("rank 0 (Node Manager) on h1: PeerUnreachable: rank 5 (host h3, "), message
    assert "rank 5 was heard from since, so its host lives" in message
    assert failed.lost_hosts == ()
    assert after_s < TIMEOUT_S / 2


def test_a_control_send_that_fails_in_mpi_names_the_rank_it_was_for():
    """The control plane turns MPI's error into PeerUnreachable naming the peer (here the rank does
    not exist in a one-process world: MPI refuses the send as it refuses one to a dead host)."""
    from mpi4py import MPI

    from onepiece_hpc.runtime.control import TAG_TO_WORKER, ControlPlane
    from onepiece_hpc.runtime.messages import Shutdown
    from onepiece_hpc.transport import WaitPolicy

    peers = [RankInfo(rank, host, 100 + rank) for rank, host in enumerate(HOSTS)]
    control = ControlPlane(MPI.COMM_SELF, WaitPolicy(), peers)
    try:
        with pytest.raises(PeerUnreachable) as unreachable:
            control.send(5, Shutdown("every unit is committed"), TAG_TO_WORKER)
    finally:
        control.close()
    assert unreachable.value.peer == PeerInfo(5, "h3", 105)
    assert str(unreachable.value).startswith("rank 5 (host h3, pid 105) can't be reached over MPI (sending it a "
                                             "Shutdown: ")
