"""How many ranks each stage gets on a node of GPUs, from measured stage costs and memory.

Stage ranks take the node's GPUs in turn (`gpus.gpu_index`), in stage order, so a layout
(encode, denoise, decode) fixes which ranks share a GPU. A GPU shared by several ranks runs their
work one after another, so its load per output is the sum, over its ranks, of the rank's share of
its stage's work: `seconds per item of the stage / ranks of the stage`. The busiest GPU sets the
rate; the layout with the lowest busiest-GPU load wins, among those where every rank's stage fits
in its share of the GPU's memory (ranks sharing a GPU split its memory evenly, as `take_gpu` caps
them). The model leaves out context switches between the ranks of a GPU and the transfers, so
a layout with fewer ranks within `TIE` of the best is preferred: fewer processes, less memory,
fewer transfers.
"""

from __future__ import annotations

from dataclasses import dataclass

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.gpus import gpu_index

TIE = 0.05  # layouts within 5% of the best load count as equal


@dataclass(frozen=True)
class StageCost:
    seconds_per_item: float
    peak_memory_mb: float


@dataclass(frozen=True)
class GpuLayout:
    stage_ranks: tuple[int, ...]     # ranks per stage, in stage order
    busiest_gpu_s_per_item: float    # the bottleneck GPU's seconds per output
    gpus: int
    floor: float                     # the stages' seconds per item, summed

    @property
    def gpu_s_per_output(self) -> float:
        """The model's prediction: every GPU is held as long as the busiest needs."""
        return self.gpus * self.busiest_gpu_s_per_item

    @property
    def efficiency(self) -> float:
        """Busy over held GPU time in steady state (fill and drain not counted)."""
        return 0.0 if not self.busiest_gpu_s_per_item else self.floor / self.gpu_s_per_output


def ranks_per_gpu(layout: tuple[int, ...], gpus: int) -> list[list[tuple[int, int]]]:
    """For each GPU, the (stage, ranks of that stage) of every rank it holds."""
    held: list[list[tuple[int, int]]] = [[] for _ in range(gpus)]
    rank = 1  # rank 0, the Node Manager, holds no GPU
    for stage, count in enumerate(layout):
        for _ in range(count):
            held[gpu_index(rank, holds_manager=True, gpus=gpus)].append((stage, count))
            rank += 1
    return held


def evaluate(layout: tuple[int, ...], costs: tuple[StageCost, ...], gpus: int, gpu_memory_mb: float) -> float | None:
    """The busiest GPU's seconds per output under `layout`, or None where a rank's stage doesn't
    fit its share of its GPU's memory."""
    busiest = 0.0
    for ranks in ranks_per_gpu(layout, gpus):
        if not ranks:
            continue
        share = gpu_memory_mb / len(ranks)
        if any(costs[stage].peak_memory_mb > share for stage, _ in ranks):
            return None
        busiest = max(busiest, sum(costs[stage].seconds_per_item / count for stage, count in ranks))
    return busiest


def choose_layout(costs: tuple[StageCost, ...], gpus: int, gpu_memory_mb: float, max_ranks: int | None = None) -> GpuLayout:
    """The fitting layout of at most `max_ranks` stage ranks (default 3 a GPU) with the lowest
    bottleneck load, fewer ranks on a near tie."""
    limit = max_ranks or 3 * gpus
    found: list[tuple[float, int, tuple[int, ...]]] = []

    def visit(prefix: tuple[int, ...]) -> None:
        if len(prefix) == len(costs):
            load = evaluate(prefix, costs, gpus, gpu_memory_mb)
            if load is not None:
                found.append((load, sum(prefix), prefix))
            return
        left = len(costs) - len(prefix) - 1  # one rank at least for each later stage
        for count in range(1, limit - sum(prefix) - left + 1):
            visit((*prefix, count))

    visit(())
    if not found:
        needs = ", ".join(f"{c.peak_memory_mb / 1024:.1f}" for c in costs)
        raise UserError(f"no layout of up to {limit} stage ranks on {gpus} GPUs fits {gpu_memory_mb / 1024:.1f} GiB a "
                        f"GPU (the stages' peaks are {needs} GiB); fix: more GPUs, a higher --gpu-memory-gib, "
                        "or --stage-ranks")
    best = min(load for load, _, _ in found)
    load, _, layout = min((f for f in found if f[0] <= best * (1 + TIE)), key=lambda f: (f[1], f[0]))
    return GpuLayout(layout, load, gpus, sum(c.seconds_per_item for c in costs))
