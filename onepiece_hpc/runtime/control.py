"""The control plane: small typed messages over MPI point-to-point (never collectives).

An MPI error is never let out raw: it is PeerUnreachable, as a ring write's is, naming the rank a
send was for (a poll of any rank blames nobody); rank 0 turns it into a liveness question rather
than the job's error (runtime/liveness.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from mpi4py import MPI

from onepiece_hpc.runtime import messages
from onepiece_hpc.runtime.peers import RankInfo
from onepiece_hpc.transport.errors import PeerInfo, PeerUnreachable, mpi_reason
from onepiece_hpc.transport.wait import WaitPolicy

TAG_TO_MANAGER = 0x4F60
TAG_TO_WORKER = 0x4F61


class ControlTimeout(TimeoutError):
    pass


class ControlPlane:
    """Send and receive control messages on a private duplicate of the world communicator.

    Sends may come from any thread (the heartbeat thread sends too); receives only from the
    thread that owns the rank's main loop.
    """

    def __init__(self, comm: MPI.Comm, policy: WaitPolicy, peers: Sequence[RankInfo] = ()) -> None:
        self.comm = comm.Dup()
        self.policy = policy
        self.peers = list(peers)  # who each rank is, to name it when it can't be reached
        self._send_lock = threading.Lock()

    def send(self, dest: int, message, tag: int) -> None:
        raw = messages.encode(message)
        with self._send_lock:
            try:
                self.comm.Send([raw, MPI.BYTE], dest=dest, tag=tag)
            except MPI.Exception as err:
                peer = self._peer(dest)
                raise PeerUnreachable(f"{peer.describe()} can't be reached over MPI (sending it a "
                                      f"{type(message).__name__}: {mpi_reason(err)}); its host died or its link "
                                      "is down", peer) from None

    def _peer(self, rank: int) -> PeerInfo:
        known = self.peers[rank] if 0 <= rank < len(self.peers) else None
        return PeerInfo(rank, known.host, known.pid) if known else PeerInfo(rank, "unknown", -1)

    def poll(self, tag: int, source: int = MPI.ANY_SOURCE) -> list[tuple[int, object]]:
        """Every message that has arrived now, as (source rank, typed message); PeerUnreachable when
        MPI fails before any has."""
        found = []
        status = MPI.Status()
        try:
            while self.comm.Iprobe(source=source, tag=tag, status=status):
                size = status.Get_count(MPI.BYTE)
                buf = bytearray(size)
                origin = status.Get_source()
                self.comm.Recv([buf, MPI.BYTE], source=origin, tag=tag)
                found.append((origin, messages.decode(bytes(buf))))
        except MPI.Exception as err:
            if found:  # what arrived before counts; the next poll meets the error again
                return found
            raise PeerUnreachable(f"receiving control messages failed in the MPI library ({mpi_reason(err)}): "
                                  "a rank's host died or its link is down") from None
        return found

    def wait_one(self, source: int, tag: int, timeout_s: float, what: str):
        """The next message from `source`, waiting with backoff; ControlTimeout after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        pause = self.policy.first_sleep_s
        while True:
            got = self.poll(tag, source)
            if got:
                return got[0][1]
            if time.monotonic() > deadline:
                raise ControlTimeout(f"no {what} from rank {source} within {timeout_s:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, self.policy.max_sleep_s)

    def close(self) -> None:
        self.comm.Free()
