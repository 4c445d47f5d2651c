"""`mpi-rma` fabric: MPI-3 one-sided windows, passive target, Put + flush.

Every rank allocates one window (an arena) collectively when the fabric is built; channel
regions are extents of it handed out locally and announced over point-to-point set-up
messages. Writers hold a shared lock on all targets for the fabric's life (MPI_Win_lock_all)
and order the stamp after the payload with MPI_Win_flush. Readers call MPI_Win_sync before
polling (the memory-model barrier of the unified model) and poke the progress engine, which
some MPI builds need at the target for Puts to land.

An MPI error is never let out raw: it is PeerUnreachable (which rank 0 turns into a liveness
question), naming the peer a write was for (a poll of this rank's own ring blames nobody), with
MPI's own last line as the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from mpi4py import MPI

from onepiece_hpc.transport.arena import Arena, ArenaFull
from onepiece_hpc.transport.errors import PeerInfo, PeerUnreachable, SetupError, mpi_reason
from onepiece_hpc.transport.fabrics.base import FabricKind, field

DEFAULT_ARENA_BYTES = 256 * 1024 * 1024


class RmaRegion:
    """An extent of this rank's window."""

    def __init__(self, fabric: RmaFabric, offset: int, nbytes: int, peer: PeerInfo) -> None:
        self._fabric = fabric
        self._peer = peer
        self.offset = offset
        self.nbytes = nbytes
        self._buffer = fabric.memory[offset: offset + nbytes]
        self._buffer[:] = 0
        fabric.window.Sync()

    @property
    def buffer(self) -> np.ndarray:
        return self._buffer

    def sync(self) -> None:
        try:
            self._fabric.progress()
        except MPI.Exception as err:
            raise PeerUnreachable(f"polling the ring from {self._peer.describe()} failed in the MPI library "
                                  f"({mpi_reason(err)}): a rank's host died or its link is down") from None

    def descriptor(self) -> dict[str, object]:
        return {"offset": self.offset, "nbytes": self.nbytes}

    def seal(self) -> None:
        return None

    def close(self) -> None:
        self._fabric.release(self.offset)


class RmaPeerRegion:
    """An extent of a peer's window, written with MPI_Put; an MPI error names the peer."""

    def __init__(self, window: MPI.Win, peer: PeerInfo, offset: int, nbytes: int) -> None:
        self._window = window
        self._peer = peer
        self._rank = peer.rank
        self._offset = offset
        self._nbytes = nbytes

    def write(self, offset: int, data: np.ndarray | bytes) -> None:
        try:
            self._window.Put([data, MPI.BYTE], self._rank,
                             target=(self._offset + offset, len(data), MPI.BYTE))
        except MPI.Exception as err:
            raise self._unreachable(err) from None

    def publish(self, offset: int, data: bytes) -> None:
        try:
            self._window.Flush(self._rank)
            self._window.Put([data, MPI.BYTE], self._rank,
                             target=(self._offset + offset, len(data), MPI.BYTE))
            self._window.Flush(self._rank)
        except MPI.Exception as err:
            raise self._unreachable(err) from None

    def _unreachable(self, err: MPI.Exception) -> PeerUnreachable:
        return PeerUnreachable(f"{self._peer.describe()} can't be reached over mpi-rma ({mpi_reason(err)}); its host "
                               "died or its link is down", self._peer)

    def close(self) -> None:
        return None


class RmaFabric:
    """One window per rank over `comm`; building and closing it are collective."""

    kind = FabricKind.MPI_RMA
    ordered_publish = True

    def __init__(self, comm: MPI.Comm, arena_bytes: int = DEFAULT_ARENA_BYTES) -> None:
        self.comm = comm.Dup()
        self.window = MPI.Win.Allocate(arena_bytes, 1, comm=self.comm)
        self.memory = np.frombuffer(self.window.tomemory(), dtype=np.uint8)
        self.window.Lock_all()
        self._arena = Arena(arena_bytes)

    def progress(self) -> None:
        self.window.Sync()
        self.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG)

    def create_region(self, nbytes: int, peer: PeerInfo) -> RmaRegion:
        try:
            offset = self._arena.allocate(nbytes)
        except ArenaFull as err:
            raise SetupError(f"the mpi-rma window of this rank cannot hold a {nbytes}-byte region "
                             f"for {peer.describe()} ({err}); build the fabric with a larger "
                             "arena_bytes or use fewer/smaller slots") from err
        return RmaRegion(self, offset, nbytes, peer)

    def attach_region(self, descriptor: Mapping[str, object], peer: PeerInfo) -> RmaPeerRegion:
        offset = int(field(descriptor, "offset", int, peer))
        nbytes = int(field(descriptor, "nbytes", int, peer))
        return RmaPeerRegion(self.window, peer, offset, nbytes)

    def release(self, offset: int) -> None:
        self._arena.free(offset)

    def liveness(self, peer: PeerInfo) -> Callable[[], None] | None:
        return None

    def close(self) -> None:
        """Collective: every rank of the communicator must call it."""
        self.window.Unlock_all()
        self.memory = np.zeros(0, dtype=np.uint8)
        self.window.Free()
        self.comm.Free()
