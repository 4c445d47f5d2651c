"""The control plane: small typed messages over MPI point-to-point (never collectives)."""

from __future__ import annotations

import threading
import time

from mpi4py import MPI

from onepiece_hpc.runtime import messages
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

    def __init__(self, comm: MPI.Comm, policy: WaitPolicy) -> None:
        self.comm = comm.Dup()
        self.policy = policy
        self._send_lock = threading.Lock()

    def send(self, dest: int, message, tag: int) -> None:
        raw = messages.encode(message)
        with self._send_lock:
            self.comm.Send([raw, MPI.BYTE], dest=dest, tag=tag)

    def poll(self, tag: int, source: int = MPI.ANY_SOURCE) -> list[tuple[int, object]]:
        """Every message that has arrived now, as (source rank, typed message)."""
        found = []
        status = MPI.Status()
        while self.comm.Iprobe(source=source, tag=tag, status=status):
            size = status.Get_count(MPI.BYTE)
            buf = bytearray(size)
            origin = status.Get_source()
            self.comm.Recv([buf, MPI.BYTE], source=origin, tag=tag)
            found.append((origin, messages.decode(bytes(buf))))
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
