"""Which GPU a rank takes, and how much of it: one place for every entry point (staged ranks,
the data-parallel baseline, the stage profile) and for the benchmark's accounting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onepiece_hpc.errors import UserError

if TYPE_CHECKING:
    import torch

    from onepiece_hpc.models.base import Placement
    from onepiece_hpc.runtime.prepare import Prepared


def gpu_index(local_rank: int, holds_manager: bool, gpus: int) -> int:
    """The node-local GPU of a rank: a node's ranks take its GPUs in turn; the Node Manager (rank 0,
    CPU only) takes none, so its node's stage ranks count from the rank after it."""
    return (local_rank - 1 if holds_manager else local_rank) % gpus


USABLE_SHARE = 0.95  # of an uncapped GPU's memory: CUDA contexts and the allocator's slack take the rest


def take_gpu(index: int, memory_gib: float | None = None, sharing: int = 1, share_mb: float | None = None
             ) -> torch.device:
    """Make GPU `index` this process's device; with `memory_gib`, cap what torch may allocate on
    it at that many GiB split between the `sharing` processes on the GPU, or at `share_mb` (this
    process's share by need, `shares_by_need`)."""
    import torch

    torch.cuda.set_device(index)
    if share_mb is None and memory_gib is not None:
        share_mb = memory_share_mb(index, memory_gib, sharing)
    if share_mb is not None:
        total_mb = torch.cuda.get_device_properties(index).total_memory / 2**20
        torch.cuda.set_per_process_memory_fraction(min(1.0, share_mb / total_mb), index)
    return torch.device("cuda", index)


def shares_by_need(total_mb: float, stages: list[str], needs_gib: dict[str, float]) -> list[float]:
    """The memory of one GPU split between its ranks (the stage of each, in `stages`) by need: a
    rank of a stage in `needs_gib` gets that many GiB, and the others split what is left evenly;
    where every rank's stage is named, what is left goes to them in proportion to their needs.
    Refuses a GPU whose named needs don't fit, naming its ranks' stages and the fix."""
    named = [needs_gib[stage] * 1024 for stage in stages if stage in needs_gib]
    others = len(stages) - len(named)
    left = total_mb - sum(named)
    if left < 0 or (others and left <= 0):
        asked = " + ".join(f"{stage} {needs_gib[stage]:g}" for stage in stages if stage in needs_gib)
        raise UserError(f"--stage-memory asks {asked} GiB of a GPU whose ranks ({', '.join(stages)}) share "
                        f"{total_mb / 1024:.1f} GiB{' and leaves nothing for the others' if left >= 0 else ''}; "
                        "fix: lower the needs, raise --gpu-memory-gib, or give the GPU fewer ranks")
    if not others:
        return [needs_gib[stage] * 1024 * total_mb / sum(named) for stage in stages]
    return [needs_gib[stage] * 1024 if stage in needs_gib else left / others for stage in stages]


def memory_share_mb(index: int, memory_gib: float | None = None, sharing: int = 1) -> float:
    """The GPU memory a process may plan on: an even share, among the `sharing` processes on GPU
    `index`, of the cap where there is one, else of the GPU's usable memory. The cap `take_gpu`
    sets, and what the layout and the rank moves plan with."""
    import torch

    if memory_gib is not None:
        return memory_gib * 1024 / sharing
    return USABLE_SHARE * torch.cuda.get_device_properties(index).total_memory / 2**20 / sharing


def check_stage_memory(needs_gib: dict[str, float], stages: tuple[str, ...], device_type: str,
                       phases: int | None) -> None:
    """Refuse a --stage-memory that can't apply: a stage the model has not, a run on the CPU, or a
    run in phases (whose ranks take the whole GPU in turn)."""
    if not needs_gib:
        return
    unknown = [stage for stage in needs_gib if stage not in stages]
    if unknown:
        raise UserError(f"--stage-memory names {', '.join(repr(s) for s in unknown)}, which the job's model has "
                        f"not; fix: name its stages ({', '.join(stages)})")
    if device_type != "cuda":
        raise UserError(f"--stage-memory splits GPU memory, but the job runs on {device_type}; fix: leave it out, "
                        "or device: cuda")
    if phases is not None:
        raise UserError("--stage-memory splits a GPU between ranks that run at once, but with --phases each rank "
                        "has the whole GPU in its turn; fix: leave one of them out")


def place_rank(prepared: Prepared, node_rank: int, memory_gib: float | None) -> Placement:
    """The placement of a rank that runs the whole pipeline (the baselines): its node's GPUs in turn,
    none held by a Node Manager; on CPU, the job's thread count."""
    import torch

    placement = prepared.placement
    if placement.device_type != "cuda":
        torch.set_num_threads(prepared.job.cpu_threads)
        return placement
    index = gpu_index(node_rank, holds_manager=False, gpus=torch.cuda.device_count())
    return placement.on(take_gpu(index, memory_gib))
