"""Transport benchmark, run on 2 MPI ranks: ring channels against mpi4py and memcpy.

Every point moves messages from a pool of rotated source buffers (and, for MPI and memcpy,
into rotated destination buffers), so caches do not flatter any contender. Bandwidth is a
one-way stream; latency is a ping-pong round trip of the same size.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from onepiece_hpc.transport.connect import FabricChoice, IntegrityChoice, Outbound, open_channels
from onepiece_hpc.transport.fabrics.base import Fabric, FabricKind
from onepiece_hpc.transport.fabrics.mpi_rma import RmaFabric
from onepiece_hpc.transport.fabrics.shm import ShmFabric
from onepiece_hpc.transport.wire import DType, TensorSpec, slot_bytes_for

log = logging.getLogger(__name__)

POOL_BYTES = 128 * 1024 * 1024  # rotated buffers per side: four times a large L3
TAG = 0x4F60


@dataclass(frozen=True)
class Record:
    """One benchmark result: GB/s one way and round-trip microseconds at one message size."""

    fabric: str
    bytes: int
    gbps: float
    rtt_us: float


@dataclass(frozen=True)
class Contender:
    """A ring configuration to measure."""

    label: str
    fabric: FabricKind
    integrity: IntegrityChoice


CONTENDERS = (  # AUTO is what the runtime asks for: header-only where the fabric orders the stamp
    Contender("ring/shm", FabricKind.SHM, IntegrityChoice.AUTO),
    Contender("ring/shm:full", FabricKind.SHM, IntegrityChoice.FULL),
    Contender("ring/mpi-rma", FabricKind.MPI_RMA, IntegrityChoice.AUTO),
)
BASELINES = ("memcpy", "mpi-sendrecv")


def _pool(size: int, fill: int) -> list[np.ndarray]:
    count = max(2, min(512, POOL_BYTES // size))
    return [np.full(size, fill, dtype=np.uint8) for _ in range(count)]


def _repeats(size: int, budget_bytes: int, low: int, high: int) -> int:
    return max(low, min(high, budget_bytes // size))


def _best(trials: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(trials))


def timed_stream(comm: MPI.Comm, n: int, send: Callable[[int], None], receive: Callable[[int], None],
                 settle: Callable[[], None] = lambda: None) -> float:
    """Seconds a message of a one-way stream of `n` messages, rank 0 to rank 1 (`settle` waits
    for work still in flight, e.g. on a GPU)."""
    comm.Barrier()
    start = time.perf_counter()
    for i in range(n):
        if comm.rank == 0:
            send(i)
        else:
            receive(i)
    settle()
    comm.Barrier()
    return (time.perf_counter() - start) / n


def timed_pong(comm: MPI.Comm, n: int, send: Callable[[int], None], receive: Callable[[int], None],
               echo: Callable[[int], None], settle: Callable[[], None] = lambda: None) -> float:
    """Seconds a round trip: rank 0 sends and receives, rank 1 echoes each message back."""
    comm.Barrier()
    start = time.perf_counter()
    for i in range(n):
        if comm.rank == 0:
            send(i)
            receive(i)
        else:
            echo(i)
    settle()
    return (time.perf_counter() - start) / n


def _memcpy(size: int, trials: int) -> Record:
    src, dst = _pool(size, 1), _pool(size, 2)
    n = _repeats(size, 512 << 20, 16, 4096)

    def run() -> float:
        start = time.perf_counter()
        for i in range(n):
            np.copyto(dst[i % len(dst)], src[(i + 1) % len(src)])
        return (time.perf_counter() - start) / n

    per_copy = _best(trials, run)
    return Record("memcpy", size, size / per_copy / 1e9, 2 * per_copy * 1e6)


def _mpi(comm: MPI.Comm, size: int, trials: int) -> Record:
    peer = 1 - comm.rank
    bufs = _pool(size, comm.rank + 1)
    n_stream = _repeats(size, 512 << 20, 16, 4096)
    n_pong = _repeats(size, 128 << 20, 16, 2000)

    def send(i: int) -> None:
        comm.Send(bufs[i % len(bufs)], peer, TAG)

    def receive(i: int) -> None:
        comm.Recv(bufs[i % len(bufs)], peer, TAG)

    def echo(i: int) -> None:
        receive(i)
        send(i)

    per_msg = _best(trials, lambda: timed_stream(comm, n_stream, send, receive))
    rtt = _best(trials, lambda: timed_pong(comm, n_pong, send, receive, echo))
    return Record("mpi-sendrecv", size, size / per_msg / 1e9, rtt * 1e6)


def _ring(comm: MPI.Comm, fabrics: dict[FabricKind, Fabric], contender: Contender, size: int,
          slots: int, trials: int) -> Record:
    peer = 1 - comm.rank
    slot = slot_bytes_for([TensorSpec("x", (size,), DType.UINT8)])
    channels = open_channels(comm, fabrics, outbound=[Outbound(peer, slots, slot,
                                                               contender.integrity)],
                             inbound=[peer], choice=FabricChoice(contender.fabric.value))
    producer = channels.outbound[peer].producer
    consumer = channels.inbound[peer].consumer
    src = _pool(size, comm.rank + 1)
    n_stream = _repeats(size, 512 << 20, 16, 4096)
    n_pong = _repeats(size, 128 << 20, 16, 2000)

    def send(i: int) -> None:
        producer.send({"x": src[i % len(src)]})

    def receive(i: int) -> None:
        consumer.receive().release()

    def echo(i: int) -> None:
        with consumer.receive() as message:
            producer.send(message.tensors)

    try:
        per_msg = _best(trials, lambda: timed_stream(comm, n_stream, send, receive))
        rtt = _best(trials, lambda: timed_pong(comm, n_pong, send, receive, echo))
    finally:
        channels.close()
    return Record(contender.label, size, size / per_msg / 1e9, rtt * 1e6)


def run_benchmark(comm: MPI.Comm, sizes: Sequence[int], slots: int = 4, trials: int = 3,
                  progress: Callable[[str], None] | None = None) -> list[Record]:
    """Measure every contender at every size; collective over a 2-rank communicator.

    Returns the records on rank 0 and an empty list elsewhere.
    """
    if comm.Get_size() != 2:
        raise ValueError(f"the transport benchmark needs exactly 2 ranks, got {comm.Get_size()}")
    # shared memory joins ranks of one host only: across hosts the ring crosses mpi-rma alone
    contenders = CONTENDERS if same_host(comm) else tuple(c for c in CONTENDERS if c.fabric is not FabricKind.SHM)
    fabrics: dict[FabricKind, Fabric] = {
        FabricKind.SHM: ShmFabric(),
        FabricKind.MPI_RMA: RmaFabric(comm, slots * slot_bytes_for(
            [TensorSpec("x", (max(sizes),), DType.UINT8)]) + (1 << 20)),
    }
    def pairs(size: int) -> list[Record]:
        return [_mpi(comm, size, trials), *(_ring(comm, fabrics, c, size, slots, trials) for c in contenders)]

    try:
        records = sweep_sizes(comm, sizes, progress, lambda size: _memcpy(size, trials), pairs)
    finally:
        for fabric in fabrics.values():
            fabric.close()
    return records if comm.rank == 0 else []


def same_host(comm: MPI.Comm) -> bool:
    """Whether every rank of `comm` runs on one host (collective)."""
    return len(set(comm.allgather(socket.gethostname()))) == 1


def sweep_sizes(comm: MPI.Comm, sizes: Sequence[int], progress: Callable[[str], None] | None,
                ceiling: Callable[[int], Record], pairs: Callable[[int], list[Record]]) -> list[Record]:
    """At each size: the one-process ceiling on rank 0 alone, then the 2-rank contenders together."""
    records: list[Record] = []
    for size in sizes:
        if progress is not None and comm.rank == 0:
            progress(f"{size} bytes")
        if comm.rank == 0:
            records.append(ceiling(size))
        comm.Barrier()
        records.extend(pairs(size))
    return records
