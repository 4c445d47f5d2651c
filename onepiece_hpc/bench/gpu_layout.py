"""How many ranks each stage gets on a node of GPUs, from measured stage costs and memory.

A layout gives the ranks of each stage of the model's topology, in its order (encode, denoise,
decode; or as many stages as the model has). Stage ranks take the node's GPUs in turn
(`gpus.gpu_index`), in stage order, so a layout fixes which ranks share a GPU. A GPU shared by
several ranks runs their work one after another, so its load per output is the sum, over its
ranks, of the rank's share of its stage's work: `seconds per item of the stage / ranks of the
stage`. The busiest GPU sets the rate; the layout with the lowest busiest-GPU load wins, among
those where every rank's stage fits in its share of the GPU's memory (ranks sharing a GPU split
its memory evenly, as `take_gpu` caps them). The model leaves out context switches between the
ranks of a GPU and the transfers, so a layout with fewer ranks within `TIE` of the best is
preferred: fewer processes, less memory, fewer transfers. The bench's `--stage-ranks` and
`--offload` are read against the model's stages here too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


def candidate_layouts(stages: int, max_ranks: int) -> Iterator[tuple[int, ...]]:
    """Every layout of `stages` stages, one rank at least each, `max_ranks` in all at most."""
    def extend(prefix: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        if len(prefix) == stages:
            yield prefix
            return
        left = stages - len(prefix) - 1  # one rank at least for each later stage
        for count in range(1, max_ranks - sum(prefix) - left + 1):
            yield from extend((*prefix, count))

    return extend(())


def choose_layout(costs: tuple[StageCost, ...], gpus: int, gpu_memory_mb: float, max_ranks: int | None = None) -> GpuLayout:
    """The fitting layout of at most `max_ranks` stage ranks (default 3 a GPU) with the lowest
    bottleneck load, fewer ranks on a near tie."""
    limit = max_ranks or 3 * gpus
    found = [(load, sum(layout), layout) for layout in candidate_layouts(len(costs), limit)
             if (load := evaluate(layout, costs, gpus, gpu_memory_mb)) is not None]
    if not found:
        needs = ", ".join(f"{c.peak_memory_mb / 1024:.1f}" for c in costs)
        raise UserError(f"no layout of up to {limit} stage ranks on {gpus} GPUs fits {gpu_memory_mb / 1024:.1f} GiB a "
                        f"GPU (the stages' peaks are {needs} GiB); fix: more GPUs, a higher --gpu-memory-gib, "
                        "or --stage-ranks")
    best = min(load for load, _, _ in found)
    load, _, layout = min((f for f in found if f[0] <= best * (1 + TIE)), key=lambda f: (f[1], f[0]))
    return GpuLayout(layout, load, gpus, sum(c.seconds_per_item for c in costs))


# -- the bench's flags, read against the model's stages ---------------------------------------------------
def parse_stage_ranks(text: str, stages: Sequence[str]) -> tuple[int, ...] | None:
    """`--stage-ranks`: "auto" (None: chosen from the profile), or one whole number a stage, in the
    order of the model's `stages`."""
    if text.strip() == "auto":
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != len(stages) or not all(part.isdigit() and int(part) > 0 for part in parts):
        example = ",".join("2" if i == len(stages) // 2 else "1" for i in range(len(stages)))
        raise UserError(f"--stage-ranks {text!r}: write auto, or {len(stages)} whole numbers above 0, one for each "
                        f"stage of the model ({','.join(stages)}), e.g. {example}")
    return tuple(int(part) for part in parts)


def parse_offload(names: Sequence[str], stages: Sequence[str]) -> tuple[str, ...]:
    """`--offload`: stages of the model, each once, in the model's order."""
    unknown = [name for name in names if name not in stages]
    if unknown:
        raise UserError(f"--offload {unknown[0]!r}: the job's model has no such stage; choose from "
                        f"{', '.join(stages)}")
    return tuple(stage for stage in stages if stage in names)
