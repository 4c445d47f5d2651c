"""Fabrics: thin implementations of the one-sided region interface (`base`): in-process, shm,
MPI RMA, verbs and cuda-ipc (`cuda_memory` holds its CUDA runtime calls); `registry` builds the
ones a run needs. Only mpi_rma, verbs and cuda-ipc import MPI, pyverbs or CUDA, on first use."""

from onepiece_hpc._exports import lazy_exports

__all__ = ["CudaIpcFabric", "Fabric", "FabricKind", "OwnedRegion", "PeerRegion", "RmaFabric", "ShmFabric",
           "VerbsFabric", "build_fabrics", "close_fabrics", "inproc_channel", "ipc_available", "sweep_leftovers"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "base": ["Fabric", "FabricKind", "OwnedRegion", "PeerRegion"],
    "cuda_ipc": ["CudaIpcFabric"],
    "cuda_memory": ["ipc_available"],
    "inproc": ["inproc_channel"],
    "mpi_rma": ["RmaFabric"],
    "registry": ["build_fabrics", "close_fabrics"],
    "shm": ["ShmFabric", "sweep_leftovers"],
    "verbs": ["VerbsFabric"],
})
