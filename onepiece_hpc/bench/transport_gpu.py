"""GPU transport benchmark, run on 2 MPI ranks of one node, each on its own GPU (both on GPU 0
when the node has one): ring/cuda-ipc and ring/pinned-shm against NCCL send/recv through
torch.distributed, and a device-to-device copy between the two GPUs in one process (the ceiling).

Every contender moves a tensor from the sender's GPU memory into the receiver's GPU memory;
ring/pinned-shm counts both copies (GPU to pinned segment, segment to GPU). Bandwidth is a
one-way stream; latency a ping-pong round trip of the same size. Sources rotate over a pool
larger than the GPU's L2 cache.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence

import torch
from mpi4py import MPI

from onepiece_hpc.bench.transport import Record, _best, _repeats, sweep_sizes, timed_pong, timed_stream
from onepiece_hpc.transport.connect import FabricChoice, IntegrityChoice, Outbound, open_channels
from onepiece_hpc.transport.fabrics.cuda_ipc import CudaIpcFabric
from onepiece_hpc.transport.fabrics.shm import ShmFabric
from onepiece_hpc.transport.ring import DeviceBytes, TensorOut
from onepiece_hpc.transport.wire import DType, TensorSpec, slot_bytes_for

POOL_BYTES = 256 * 1024 * 1024  # rotated source buffers: several times an H100/H200 L2


def rank_device(comm: MPI.Comm) -> torch.device:
    return torch.device("cuda", comm.Get_rank() % torch.cuda.device_count())


def _pool(size: int, device: torch.device) -> list[torch.Tensor]:
    count = max(2, min(64, POOL_BYTES // size))
    return [torch.randint(0, 255, (size,), dtype=torch.uint8, device=device) for _ in range(count)]


def _out(tensor: torch.Tensor) -> list[TensorOut]:
    return [TensorOut("x", DeviceBytes(tensor, tuple(tensor.shape), tensor.numel()), DType.UINT8)]


def _d2d(size: int, trials: int) -> Record:
    """A copy from GPU 0 to GPU 1 (or within GPU 0 on a one-GPU node) by torch, timed with events."""
    source_device = torch.device("cuda", 0)
    target_device = torch.device("cuda", min(1, torch.cuda.device_count() - 1))
    sources, target = _pool(size, source_device), torch.empty(size, dtype=torch.uint8, device=target_device)
    n = _repeats(size, 2 << 30, 16, 2000)

    def run() -> float:
        torch.cuda.synchronize(source_device)
        torch.cuda.synchronize(target_device)
        start = time.perf_counter()
        for i in range(n):
            target.copy_(sources[i % len(sources)], non_blocking=True)
        torch.cuda.synchronize(source_device)
        torch.cuda.synchronize(target_device)
        return (time.perf_counter() - start) / n

    run()
    per_copy = _best(trials, run)
    return Record("d2d-copy", size, size / per_copy / 1e9, 2 * per_copy * 1e6)


def _ring(comm: MPI.Comm, fabric, label: str, choice: FabricChoice, size: int, slots: int,
          trials: int) -> Record:
    peer, device = 1 - comm.rank, rank_device(comm)
    slot = slot_bytes_for([TensorSpec("x", (size,), DType.UINT8)])
    channels = open_channels(comm, {fabric.kind: fabric},
                             outbound=[Outbound(peer, slots, slot, IntegrityChoice.AUTO)],
                             inbound=[peer], choice=choice)
    producer, consumer = channels.outbound[peer].producer, channels.inbound[peer].consumer
    sources = _pool(size, device)
    landing = torch.empty(size, dtype=torch.uint8, device=device)  # pinned-shm: the receiver's GPU copy
    n_stream = _repeats(size, 2 << 30, 16, 2000)
    n_pong = _repeats(size, 512 << 20, 16, 1000)

    def land(x) -> torch.Tensor:
        """A received tensor in this GPU's memory (pinned shm: copied in, then the slot may go)."""
        if isinstance(x, DeviceBytes):
            return x.data
        landing.copy_(torch.from_numpy(x), non_blocking=True)
        torch.cuda.synchronize(device)
        return landing

    def send(i: int) -> None:
        producer.send(_out(sources[i % len(sources)]))

    def receive(i: int) -> None:
        with consumer.receive() as message:
            land(message.tensors["x"])

    def echo(i: int) -> None:
        with consumer.receive() as message:
            producer.send(_out(land(message.tensors["x"])))

    try:
        timed_stream(comm, n_stream, send, receive)  # warm-up
        per_msg = _best(trials, lambda: timed_stream(comm, n_stream, send, receive))
        rtt = _best(trials, lambda: timed_pong(comm, n_pong, send, receive, echo))
    finally:
        channels.close()
    return Record(label, size, size / per_msg / 1e9, rtt * 1e6)


def _nccl_group(comm: MPI.Comm) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    port = 0
    if comm.rank == 0:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    port = comm.bcast(port, root=0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=comm.rank, world_size=2,
                            device_id=rank_device(comm))


def _nccl(comm: MPI.Comm, size: int, trials: int) -> Record:
    import torch.distributed as dist

    peer, device = 1 - comm.rank, rank_device(comm)
    buffers = _pool(size, device)
    n_stream = _repeats(size, 2 << 30, 16, 2000)
    n_pong = _repeats(size, 512 << 20, 16, 1000)

    def send(i: int) -> None:
        dist.send(buffers[i % len(buffers)], peer)

    def receive(i: int) -> None:
        dist.recv(buffers[i % len(buffers)], peer)

    def echo(i: int) -> None:
        receive(i)
        send(i)

    def settle() -> None:
        torch.cuda.synchronize(device)

    timed_stream(comm, n_stream, send, receive, settle)  # warm-up
    per_msg = _best(trials, lambda: timed_stream(comm, n_stream, send, receive, settle))
    rtt = _best(trials, lambda: timed_pong(comm, n_pong, send, receive, echo, settle))
    return Record("nccl-sendrecv", size, size / per_msg / 1e9, rtt * 1e6)


def run_gpu_benchmark(comm: MPI.Comm, sizes: Sequence[int], slots: int = 4, trials: int = 3,
                      progress: Callable[[str], None] | None = None) -> list[Record]:
    """Every contender at every size; collective over 2 ranks. Records on rank 0 only."""
    if comm.Get_size() != 2:
        raise ValueError(f"the GPU transport benchmark needs exactly 2 ranks, got {comm.Get_size()}")
    device = rank_device(comm)
    torch.cuda.set_device(device)
    ipc, shm = CudaIpcFabric(device), ShmFabric(device)
    shared_gpu = torch.cuda.device_count() < 2  # NCCL refuses two ranks on one GPU
    if not shared_gpu:
        _nccl_group(comm)

    def pairs(size: int) -> list[Record]:
        return [*([] if shared_gpu else [_nccl(comm, size, trials)]),
                _ring(comm, ipc, "ring/cuda-ipc", FabricChoice.CUDA_IPC, size, slots, trials),
                _ring(comm, shm, "ring/pinned-shm", FabricChoice.SHM, size, slots, trials)]

    try:
        records = sweep_sizes(comm, sizes, progress, lambda size: _d2d(size, trials), pairs)
    finally:
        ipc.close()
        shm.close()
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return records if comm.rank == 0 else []

