"""What a fabric provides to channel set-up: regions it owns, regions of peers it can write."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Protocol

from onepiece_hpc.transport.errors import PeerInfo
from onepiece_hpc.transport.region import LocalRegion, RemoteRegion


class FabricKind(str, Enum):
    """Fabric names as they appear on the command line and in set-up messages."""

    SHM = "shm"
    MPI_RMA = "mpi-rma"
    VERBS = "verbs"
    CUDA_IPC = "cuda-ipc"


class OwnedRegion(LocalRegion, Protocol):
    """A region this rank created; its descriptor lets the peer attach to it."""

    def descriptor(self) -> dict[str, object]:
        """Plain-JSON description the peer passes to `Fabric.attach_region`."""
        ...

    def seal(self) -> None:
        """Called once the peer has attached: drop any name others could still open."""
        ...

    def close(self) -> None:
        ...


class PeerRegion(RemoteRegion, Protocol):
    """A peer's region this rank writes into."""

    def close(self) -> None:
        ...


class Fabric(Protocol):
    """A way to reach peers' memory; one instance per rank and kind."""

    kind: FabricKind
    ordered_publish: bool  # publish() is seen only after every earlier write, without checksums

    def create_region(self, nbytes: int, peer: PeerInfo) -> OwnedRegion:
        ...

    def attach_region(self, descriptor: Mapping[str, object], peer: PeerInfo) -> PeerRegion:
        ...

    def liveness(self, peer: PeerInfo) -> Callable[[], None] | None:
        """A check that raises PeerDied if the fabric can tell the peer is gone, else None."""
        ...

    def close(self) -> None:
        ...


def field(descriptor: Mapping[str, object], name: str, kind: type, peer: PeerInfo) -> object:
    """One typed field of a peer's region descriptor, or a SetupError naming the peer."""
    from onepiece_hpc.transport.errors import SetupError

    value = descriptor.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SetupError(f"region descriptor from {peer.describe()} has {name}={value!r}, "
                         f"expected {kind.__name__}; are both ranks running the same onepiece?")
    return value
