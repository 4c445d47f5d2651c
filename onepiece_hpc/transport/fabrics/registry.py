"""Build the fabrics a rank may use, for a user's `--fabric` choice."""

from __future__ import annotations

import logging

from mpi4py import MPI

from onepiece_hpc.transport.connect import FabricChoice
from onepiece_hpc.transport.fabrics.base import Fabric, FabricKind
from onepiece_hpc.transport.fabrics.mpi_rma import DEFAULT_ARENA_BYTES, RmaFabric
from onepiece_hpc.transport.fabrics.shm import ShmFabric
from onepiece_hpc.transport.fabrics.verbs import VerbsFabric, verbs_devices

log = logging.getLogger(__name__)


def build_fabrics(comm: MPI.Comm, choice: FabricChoice = FabricChoice.AUTO,
                  rma_arena_bytes: int = DEFAULT_ARENA_BYTES) -> dict[FabricKind, Fabric]:
    """The fabrics for `choice`. Collective over `comm` (mpi-rma allocates a window per rank)."""
    fabrics: dict[FabricKind, Fabric] = {}
    if choice in (FabricChoice.AUTO, FabricChoice.SHM):
        fabrics[FabricKind.SHM] = ShmFabric()
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
