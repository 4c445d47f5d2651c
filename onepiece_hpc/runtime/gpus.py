"""Which GPU a rank takes, and how much of it: one place for every entry point (staged ranks,
the data-parallel baseline, the stage profile) and for the benchmark's accounting."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from onepiece_hpc.models.base import Placement
    from onepiece_hpc.runtime.prepare import Prepared


def gpu_index(local_rank: int, holds_manager: bool, gpus: int) -> int:
    """The node-local GPU of a rank: a node's ranks take its GPUs in turn; the Node Manager (rank 0,
    CPU only) takes none, so its node's stage ranks count from the rank after it."""
    return (local_rank - 1 if holds_manager else local_rank) % gpus


USABLE_SHARE = 0.95  # of an uncapped GPU's memory: CUDA contexts and the allocator's slack take the rest


def take_gpu(index: int, memory_gib: float | None = None, sharing: int = 1) -> torch.device:
    """Make GPU `index` this process's device; with `memory_gib`, cap what torch may allocate on
    it at that many GiB split between the `sharing` processes on the GPU."""
    torch.cuda.set_device(index)
    if memory_gib is not None:
        total_mb = torch.cuda.get_device_properties(index).total_memory / 2**20
        torch.cuda.set_per_process_memory_fraction(min(1.0, memory_share_mb(index, memory_gib, sharing) / total_mb),
                                                   index)
    return torch.device("cuda", index)


def memory_share_mb(index: int, memory_gib: float | None = None, sharing: int = 1) -> float:
    """The GPU memory a process may plan on: an even share, among the `sharing` processes on GPU
    `index`, of the cap where there is one, else of the GPU's usable memory. The cap `take_gpu`
    sets, and what the layout and the rank moves plan with."""
    if memory_gib is not None:
        return memory_gib * 1024 / sharing
    return USABLE_SHARE * torch.cuda.get_device_properties(index).total_memory / 2**20 / sharing


def place_rank(prepared: Prepared, node_rank: int, memory_gib: float | None) -> Placement:
    """The placement of a rank that runs the whole pipeline (the baselines): its node's GPUs in turn,
    none held by a Node Manager; on CPU, the job's thread count."""
    from dataclasses import replace

    placement = prepared.placement
    if placement.device.type != "cuda":
        torch.set_num_threads(prepared.job.cpu_threads)
        return placement
    index = gpu_index(node_rank, holds_manager=False, gpus=torch.cuda.device_count())
    return replace(placement, device=take_gpu(index, memory_gib))
