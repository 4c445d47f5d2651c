"""Whether a process of this host runs: the one check that the ranks, the shared-memory fabric and
`onepiece status --watch` share."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host runs. A zombie (killed, not yet reaped) counts as dead; a
    process of another user, which we may not signal, counts as alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    except (OSError, IndexError):
        return True  # no readable /proc: the signal said it exists
    return state not in (b"Z", b"X")
