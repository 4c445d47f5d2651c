"""Which GPU a rank takes, and how much of it: one place for every entry point (staged ranks,
the data-parallel baseline, the stage profile) and for the benchmark's accounting."""

from __future__ import annotations

import torch


def gpu_index(local_rank: int, holds_manager: bool, gpus: int) -> int:
    """The node-local GPU of a rank: a node's ranks take its GPUs in turn; the Node Manager (rank 0,
    CPU only) takes none, so its node's stage ranks count from the rank after it."""
    return (local_rank - 1 if holds_manager else local_rank) % gpus


def take_gpu(index: int, memory_gib: float | None = None, sharing: int = 1) -> torch.device:
    """Make GPU `index` this process's device; with `memory_gib`, cap what torch may allocate on
    it at that many GiB split between the `sharing` processes on the GPU."""
    torch.cuda.set_device(index)
    if memory_gib is not None:
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, memory_gib * 2**30 / sharing / total), index)
    return torch.device("cuda", index)


def memory_share_mb(index: int, memory_gib: float | None = None, sharing: int = 1) -> float:
    """The GPU memory a process may plan on: its cap where there is one, else an even share of
    the GPU among the `sharing` processes on it (what the layout and the rank moves plan with)."""
    total_gib = memory_gib if memory_gib is not None else torch.cuda.get_device_properties(index).total_memory / 2**30
    return total_gib * 1024 / sharing
