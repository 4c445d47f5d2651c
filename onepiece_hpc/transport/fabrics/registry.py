"""Build the fabrics a rank may use, for a user's `--fabric` choice."""

from __future__ import annotations

import logging

from mpi4py import MPI

from onepiece_hpc.transport.connect import FabricChoice
from onepiece_hpc.transport.errors import SetupError
from onepiece_hpc.transport.fabrics.base import Fabric, FabricKind
from onepiece_hpc.transport.fabrics.mpi_rma import DEFAULT_ARENA_BYTES, RmaFabric
from onepiece_hpc.transport.fabrics.shm import ShmFabric
from onepiece_hpc.transport.fabrics.verbs import VerbsFabric, verbs_devices

log = logging.getLogger(__name__)


def build_fabrics(comm: MPI.Comm, choice: FabricChoice = FabricChoice.AUTO,
                  rma_arena_bytes: int = DEFAULT_ARENA_BYTES, gpu=None) -> dict[FabricKind, Fabric]:
    """The fabrics for `choice`. Collective over `comm` (mpi-rma allocates a window per rank).

    `gpu`: this rank's torch device when it runs on a GPU: shm then page-locks its rings and
    takes tensors straight from GPU memory, and cuda-ipc is offered to same-node GPU peers.
    """
    fabrics: dict[FabricKind, Fabric] = {}
    if gpu is not None and choice in (FabricChoice.AUTO, FabricChoice.CUDA_IPC):
        from onepiece_hpc.transport.fabrics.cuda_memory import ipc_available

        if ipc_available():
            from onepiece_hpc.transport.fabrics.cuda_ipc import CudaIpcFabric

            fabrics[FabricKind.CUDA_IPC] = CudaIpcFabric(gpu)
        elif choice is FabricChoice.CUDA_IPC:
            raise SetupError(f"rank {comm.Get_rank()}: --fabric cuda-ipc needs CuPy for CUDA IPC; fix: "
                             "pip install the CuPy of your CUDA (e.g. cupy-cuda12x), or use --fabric auto")
        else:
            log.warning("rank %d: no CuPy, so no cuda-ipc: GPU tensors go through pinned shm",
                        comm.Get_rank())
    if choice in (FabricChoice.AUTO, FabricChoice.SHM, FabricChoice.CUDA_IPC):
        fabrics[FabricKind.SHM] = ShmFabric(gpu)  # cuda-ipc's headers, and the way to rank 0
    if choice in (FabricChoice.AUTO, FabricChoice.VERBS) and verbs_devices():
        fabrics[FabricKind.VERBS] = VerbsFabric()
    if choice in (FabricChoice.AUTO, FabricChoice.MPI_RMA):
        fabrics[FabricKind.MPI_RMA] = RmaFabric(comm, rma_arena_bytes)
    log.debug("rank %d fabrics: %s", comm.Get_rank(), [k.value for k in fabrics])
    return fabrics


def close_fabrics(fabrics: dict[FabricKind, Fabric]) -> None:
    """Collective when mpi-rma is among them; call after every channel is closed."""
    for fabric in fabrics.values():
        fabric.close()
