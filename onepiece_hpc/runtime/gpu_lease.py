"""One GPU's turn among the stage ranks of a node that run on it in phases.

When a GPU's memory can't hold every stage's weights at once (a job with `phases`), its ranks
take turns: a rank holds the GPU's lease while it runs, with its weights on the GPU, and gives
the lease back with its weights in page-locked host memory. Each rank keeps the GPU while it has
work it can finish (input, and room downstream), so a stage runs a phase of up to a ring's depth
of units per turn and the weights cross once per phase, not once per unit.

The lease is an advisory lock (flock) on a file in /dev/shm, named as the shm fabric names its
segments (onepiece-PID-TOKEN: mode 0600, created exclusively, never a predictable name). The
GPU's first rank creates it and names it in its set-up record; the others open it by that name.
The kernel lets go of a dead holder's lock, so a killed rank never keeps the GPU; the file goes
when its creator exits (or with the next run's sweep of leftovers if it was killed).

No deadlock: a rank asks for the lease only when it can finish a unit without waiting on another
rank of the same GPU (its downstream ring has room; rank 0, which drains the last stage, never
needs a GPU), and gives it back before it waits for anything.
"""

from __future__ import annotations

import fcntl
import os
import secrets

from onepiece_hpc.transport.fabrics.shm import PREFIX, SHM_DIR


class LeaseError(RuntimeError):
    """The lease file could not be created or opened (names the file and the fix)."""


class GpuLease:
    """The lease of one GPU, as one rank holds it: `try_take` without waiting, `give_back`."""

    def __init__(self, path: str, fd: int, created: bool) -> None:
        self.path, self._fd, self._created = path, fd, created
        self.held = False
        self.turns = 0  # how many times this rank took the GPU

    @classmethod
    def create(cls) -> GpuLease:
        """A new lease file (this rank is the GPU's first); its name goes to the GPU's other ranks."""
        path = os.path.join(SHM_DIR, f"{PREFIX}-{os.getpid()}-{secrets.token_hex(16)}")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            raise LeaseError(f"cannot create the GPU lease {path} ({err}); fix: make {SHM_DIR} writable, "
                             "or run without phases") from err
        return cls(path, fd, created=True)

    @classmethod
    def join(cls, name: str) -> GpuLease:
        """The lease another rank of this GPU created, by its file name."""
        if os.path.basename(name) != name or not name.startswith(f"{PREFIX}-"):
            raise LeaseError(f"{name!r} is not a GPU lease name")
        path = os.path.join(SHM_DIR, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError as err:
            raise LeaseError(f"cannot open the GPU lease {path} that its GPU's first rank created ({err})") from err
        if os.fstat(fd).st_uid != os.getuid():
            os.close(fd)
            raise LeaseError(f"the GPU lease {path} belongs to another user")
        return cls(path, fd, created=False)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def try_take(self) -> bool:
        """Take the GPU if no other rank holds it; True if this rank holds it now."""
        if self.held:
            return True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        self.turns += 1
        return True

    def give_back(self) -> None:
        if self.held:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self.held = False

    def close(self) -> None:
        self.give_back()
        os.close(self._fd)
        if self._created:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
