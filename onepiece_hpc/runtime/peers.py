"""Who is where: every rank's host and pid (exchanged once at start), and liveness checks."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RankInfo:
    rank: int
    host: str
    pid: int


def me(rank: int) -> RankInfo:
    return RankInfo(rank=rank, host=socket.gethostname(), pid=os.getpid())


def process_alive(pid: int) -> bool:
    """Whether a process of this host runs (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def resident_mb() -> float:
    """This process's resident memory in MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
