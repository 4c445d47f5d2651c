"""`shm` fabric: POSIX shared memory between ranks of one node.

Segments are created 0600 with O_EXCL under an unguessable name `onepiece-<pid>-<128 random
bits>`, mapped by both ends, then unlinked as soon as the peer has attached, so a crash after
set-up leaves nothing behind. A kill -9 during set-up can leave a name: every new fabric
removes `onepiece-*` segments of this user whose owner pid is gone.

Ordering: x86-64 makes stores visible in program order (TSO) and glibc fences its non-temporal
copies, so the stamp written last is seen after the payload. Other CPUs get no such promise,
so there the fabric reports `ordered_publish = False` and channels must use full checksums.
"""

from __future__ import annotations

import atexit
import logging
import mmap
import os
import platform
import re
import secrets
import stat
from collections.abc import Callable, Mapping

import numpy as np

from onepiece_hpc.processes import process_alive
from onepiece_hpc.transport.errors import PeerDied, PeerInfo, SetupError
from onepiece_hpc.transport.fabrics.base import FabricKind, field
from onepiece_hpc.transport.ring import CREDIT_REGION_BYTES, DeviceBytes

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"  # where Linux mounts POSIX shared memory (shm_open names)
PREFIX = "onepiece"
_NAME = re.compile(rf"^{PREFIX}-(\d+)-[0-9a-f]{{32}}$")
_LINKED: set[str] = set()  # names this process created and has not unlinked yet


def _unlink_all() -> None:
    for name in list(_LINKED):
        _unlink(name)


atexit.register(_unlink_all)


def _unlink(name: str) -> None:
    _LINKED.discard(name)
    try:
        os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        pass


def sweep_leftovers() -> list[str]:
    """Remove this user's `onepiece-*` segments whose owner process is gone; return their names."""
    removed = []
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return removed
    uid = os.geteuid()
    for name in names:
        match = _NAME.match(name)
        if not match or process_alive(int(match.group(1))):
            continue
        try:
            if os.stat(os.path.join(SHM_DIR, name)).st_uid != uid:
                continue
            os.unlink(os.path.join(SHM_DIR, name))
        except FileNotFoundError:
            continue
        removed.append(name)
    if removed:
        log.info("removed %d shared-memory segments left by dead processes", len(removed))
    return removed


class _Mapping:
    """A mapped segment: a uint8 view plus the mmap that backs it; page-locked for GPU copies
    when `pinned` (ranks on a GPU: copies then go by DMA, without a staging buffer)."""

    def __init__(self, fd: int, nbytes: int, pinned: bool = False) -> None:
        self._map = mmap.mmap(fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.buffer = np.frombuffer(self._map, dtype=np.uint8)
        self.view = memoryview(self.buffer)
        self.pinned_at = 0
        if pinned:
            from onepiece_hpc.transport.fabrics.cuda_memory import pin

            self.pinned_at = pin(self.buffer)

    def close(self) -> None:
        if self.pinned_at:
            from onepiece_hpc.transport.fabrics.cuda_memory import unpin

            unpin(self.pinned_at)
            self.pinned_at = 0
        self.view.release()
        self.buffer = np.zeros(0, dtype=np.uint8)
        try:
            self._map.close()
        except BufferError:
            log.debug("segment still has live tensor views; it is unmapped when they go")


class ShmRegion:
    """A segment this rank created (the consumer's data ring or the producer's credits)."""

    def __init__(self, nbytes: int, pinned: bool = False) -> None:
        self.name = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(16)}"
        path = os.path.join(SHM_DIR, self.name)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        except FileNotFoundError as err:
            raise SetupError(f"{SHM_DIR} does not exist: the shm fabric needs Linux POSIX shared "
                             "memory; choose --fabric mpi-rma") from err
        _LINKED.add(self.name)
        try:
            os.ftruncate(fd, nbytes)
            self._mapping = _Mapping(fd, nbytes, pinned)
        except OSError as err:
            _unlink(self.name)
            raise SetupError(f"cannot create a {nbytes}-byte segment in {SHM_DIR} ({err}); "
                             "free space there or use smaller slots") from err
        finally:
            os.close(fd)
        self.nbytes = nbytes

    @property
    def buffer(self) -> np.ndarray:
        return self._mapping.buffer

    def sync(self) -> None:
        return None

    def descriptor(self) -> dict[str, object]:
        return {"name": self.name, "nbytes": self.nbytes}

    def seal(self) -> None:
        _unlink(self.name)

    def close(self) -> None:
        _unlink(self.name)
        self._mapping.close()


class ShmPeerRegion:
    """A peer's segment, mapped for writing."""

    def __init__(self, name: str, nbytes: int, peer: PeerInfo, copies=None) -> None:
        self._copies = copies  # a CopyQueue when this rank is on a GPU: the segment is pinned
        self.accepts_device = copies is not None
        if not _NAME.match(name):
            raise SetupError(f"{peer.describe()} sent segment name {name!r}, which is not a "
                             "onepiece segment name")
        try:
            fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError as err:
            raise SetupError(f"segment {name} of {peer.describe()} is gone: is that rank on "
                             "another node? use --fabric mpi-rma or auto") from err
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) != 0o600 \
                    or info.st_size != nbytes:
                raise SetupError(f"segment {name} of {peer.describe()} has owner {info.st_uid}, "
                                 f"mode {stat.S_IMODE(info.st_mode):o}, size {info.st_size}; "
                                 f"expected owner {os.geteuid()}, mode 600, size {nbytes}")
            self._mapping = _Mapping(fd, nbytes, pinned=copies is not None and nbytes > CREDIT_REGION_BYTES)
        finally:
            os.close(fd)

    def write(self, offset: int, data) -> None:
        if type(data) is DeviceBytes:  # GPU -> pinned segment, by DMA on the rank's copy stream
            if not self._mapping.pinned_at or offset + data.nbytes > len(self._mapping.buffer):
                raise ValueError(f"cannot copy {data.nbytes} device bytes to offset {offset} of this segment")
            self._copies.copy_to_host(self._mapping.buffer[offset: offset + data.nbytes], data.data)
            return
        self._mapping.view[offset: offset + len(data)] = data

    def publish(self, offset: int, data: bytes) -> None:
        if self._copies is not None:  # once every payload queued before it has landed
            self._copies.publish_after(lambda: self._stamp(offset, data))
            return
        self._stamp(offset, data)

    def _stamp(self, offset: int, data: bytes) -> None:
        self._mapping.view[offset: offset + len(data)] = data

    def close(self) -> None:
        if self._copies is not None:
            self._copies.wait()
        self._mapping.close()


class ShmFabric:
    """Same-node fabric over POSIX shared memory."""

    kind = FabricKind.SHM
    ordered_publish = platform.machine().lower() in ("x86_64", "amd64")

    def __init__(self, gpu=None) -> None:
        """`gpu`: the torch device of a rank on a GPU; its data rings are then page-locked and
        it may send tensors straight from GPU memory."""
        sweep_leftovers()
        self._gpu = gpu
        self._copies = None
        if gpu is not None:
            from onepiece_hpc.transport.fabrics.cuda_memory import CopyQueue

            self._copies = CopyQueue(gpu)

    def create_region(self, nbytes: int, peer: PeerInfo) -> ShmRegion:
        return ShmRegion(nbytes, pinned=self._gpu is not None and nbytes > CREDIT_REGION_BYTES)

    def attach_region(self, descriptor: Mapping[str, object], peer: PeerInfo) -> ShmPeerRegion:
        name = field(descriptor, "name", str, peer)
        nbytes = field(descriptor, "nbytes", int, peer)
        return ShmPeerRegion(str(name), int(nbytes), peer, self._copies)

    def liveness(self, peer: PeerInfo) -> Callable[[], None] | None:
        def check() -> None:
            if not process_alive(peer.pid):
                raise PeerDied(f"{peer.describe()} has exited (its process is gone); the channel "
                               "cannot complete: see that rank's log for why it died")
        return check

    def close(self) -> None:
        return None
