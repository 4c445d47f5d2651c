"""Who is where: every rank's host and pid (exchanged once at start), and liveness checks."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from onepiece_hpc.processes import process_alive

PEER_RECORD_BYTES = 512  # fixed-size JSON record a rank contributes to the exchange


@dataclass(frozen=True)
class RankInfo:
    rank: int
    host: str
    pid: int
    pulse_port: int = 0   # rank 0's only: where the run's pulses go (runtime/pulse.py); 0: none
    pulse_token: str = ""  # ...and the token they carry, in hex


def me(rank: int) -> RankInfo:
    return RankInfo(rank=rank, host=socket.gethostname(), pid=os.getpid())


def exchange_peers(comm, mine: RankInfo) -> list[RankInfo]:
    """Every rank's RankInfo, in rank order: one Allgather of fixed-size JSON records (no pickle)."""
    from mpi4py import MPI

    raw = json.dumps(asdict(mine)).encode()
    if len(raw) > PEER_RECORD_BYTES:
        raise ValueError(f"host name too long for the peer exchange: {mine.host[:80]!r}")
    send = bytearray(raw.ljust(PEER_RECORD_BYTES, b" "))
    recv = bytearray(PEER_RECORD_BYTES * comm.Get_size())
    comm.Allgather([send, MPI.BYTE], [recv, MPI.BYTE])
    records = [json.loads(recv[i:i + PEER_RECORD_BYTES]) for i in range(0, len(recv), PEER_RECORD_BYTES)]
    return [RankInfo(rank=int(r["rank"]), host=str(r["host"]), pid=int(r["pid"]),
                     pulse_port=int(r.get("pulse_port", 0)), pulse_token=str(r.get("pulse_token", "")))
            for r in records]


#: a rank that rank 0 will end (its error reached rank 0, or rank 0 stopped the job) waits this long
#: for rank 0's MPI_Abort, so that rank 0's message and report come first
ABORT_WAIT_S = 15.0


class ManagerGone(RuntimeError):
    """The Node Manager's process ended: nobody is left to commit, so stop."""


def manager_gone(manager: RankInfo, me: RankInfo) -> bool:
    """Rank 0's process has ended (only seen from rank 0's host)."""
    return manager.host == me.host and not process_alive(manager.pid)


def await_abort(manager: RankInfo, me: RankInfo, wait_s: float = ABORT_WAIT_S) -> bool:
    """Wait for rank 0's abort to end this process; return if it has not come by the deadline, or
    rank 0 (on this host) is gone, so that the caller ends itself: True for the second. Leaving at
    once instead would let the launcher, seeing a rank exit, kill rank 0 before it says why the
    job stops."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        if manager_gone(manager, me):
            return True
        time.sleep(0.1)
    return False


def resident_mb() -> float:
    """This process's resident memory in MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
