"""How many ranks each stage gets on a node of GPUs, from measured stage costs and memory.

A layout gives the ranks of each stage of the model's topology, in its order (encode, denoise,
decode; or as many stages as the model has). Stage ranks take the node's GPUs in turn
(`gpus.gpu_index`), in stage order, so a layout fixes which ranks share a GPU. A GPU shared by
several ranks runs their work side by side, so its load per output is the sum, over its ranks, of
the rank's share of its stage's work: `seconds per item of the stage / ranks of the stage`. The
busiest GPU sets the steady rate; a rank's stage must fit its share of the GPU's memory (ranks
sharing a GPU split it evenly, as `take_gpu` caps them; or, with `split="need"`, by their peaks).

Two things the steady state misses decide between layouts that are close in it:
- a stage runs slower in the pipeline than alone (the 1.3B decode: 2.70 against 2.55 s a video),
  so a layout is scored by its worst load when any one stage is `SLOWER` slower;
- a batch has a fill and a drain, so among the layouts near the best steady load, the one whose
  batch (bench/shared_gpus.py, tail included) ends first wins.

A layout with fewer ranks within `TIE` of the best is preferred: fewer processes, less memory,
fewer transfers. The bench's `--stage-ranks` and `--offload` are read against the model's stages
here too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.gpus import gpu_index
from onepiece_hpc.bench.shared_gpus import BatchRun, simulate_batch

TIE = 0.01      # layouts within 1% of the best count as equal
SLOWER = 0.10   # how much slower than alone a stage may run in the pipeline (measured: up to 6%)
NEAR = 0.25     # layouts within 25% of the best steady load are simulated for the batch
LONG_BATCH = 32  # units a GPU: the batch assumed where none is given


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
    batch: BatchRun | None = None    # the simulated batch, fill and drain included

    @property
    def gpu_s_per_output(self) -> float:
        """The model's prediction: every GPU is held as long as the busiest needs."""
        return self.gpus * self.busiest_gpu_s_per_item

    @property
    def efficiency(self) -> float:
        """Busy over held GPU time in steady state (fill and drain not counted)."""
        return 0.0 if not self.busiest_gpu_s_per_item else self.floor / self.gpu_s_per_output


def stage_costs(profile: dict, batch: int, stages: tuple[str, ...]) -> tuple[StageCost, ...]:
    """Each of `stages`' seconds per item at `batch` (its best where it could not run that batch) and
    peak memory, in the pipeline's order, from a stage profile (`onepiece bench pipeline`'s record)."""
    def cost(stage: dict) -> StageCost:
        return StageCost(stage["s_per_item"].get(str(batch), stage["best_s_per_item"]), stage["peak_memory_mb"])
    return tuple(cost(profile["stages"][name]) for name in stages)


def unit_seconds(costs: tuple[StageCost, ...], batch: int) -> list[float]:
    """Each stage's seconds for a unit of `batch` items: what the batch model takes."""
    return [c.seconds_per_item * batch for c in costs]


def ranks_per_gpu(layout: tuple[int, ...], gpus: int) -> list[list[tuple[int, int]]]:
    """For each GPU, the (stage, ranks of that stage) of every rank it holds."""
    held: list[list[tuple[int, int]]] = [[] for _ in range(gpus)]
    rank = 1  # rank 0, the Node Manager, holds no GPU
    for stage, count in enumerate(layout):
        for _ in range(count):
            held[gpu_index(rank, holds_manager=True, gpus=gpus)].append((stage, count))
            rank += 1
    return held


def fits(layout: tuple[int, ...], costs: tuple[StageCost, ...], gpus: int, gpu_memory_mb: float,
         split: str = "even") -> bool:
    """Whether every rank's stage fits its share of its GPU: an even share, or (`split="need"`) a
    share in proportion to its peak, which fits where the peaks of a GPU's ranks add up to its memory."""
    for ranks in ranks_per_gpu(layout, gpus):
        peaks = [costs[stage].peak_memory_mb for stage, _ in ranks]
        if peaks and (sum(peaks) > gpu_memory_mb if split == "need" else max(peaks) > gpu_memory_mb / len(peaks)):
            return False
    return True


def evaluate(layout: tuple[int, ...], costs: tuple[StageCost, ...], gpus: int, gpu_memory_mb: float,
             split: str = "even") -> float | None:
    """The busiest GPU's seconds per output under `layout`, or None where a rank's stage doesn't
    fit its share of its GPU's memory."""
    if not fits(layout, costs, gpus, gpu_memory_mb, split):
        return None
    return max(sum(costs[stage].seconds_per_item / count for stage, count in ranks)
               for ranks in ranks_per_gpu(layout, gpus) if ranks)


def slowed(costs: tuple[StageCost, ...], stage: int, by: float = SLOWER) -> tuple[StageCost, ...]:
    """`costs` with one stage `by` slower."""
    return tuple(StageCost(c.seconds_per_item * (1 + by * (i == stage)), c.peak_memory_mb) for i, c in enumerate(costs))


def worst_load(layout: tuple[int, ...], costs: tuple[StageCost, ...], gpus: int) -> float:
    """The busiest GPU's seconds per output when whichever stage hurts this layout most runs
    `SLOWER` slower than measured (memory is not looked at)."""
    return max(evaluate(layout, slowed(costs, stage), gpus, float("inf")) for stage in range(len(costs)))


def batch_window(layout: tuple[int, ...], costs: tuple[StageCost, ...], gpus: int, units: int,
                 batch: int = 1) -> float:
    """The worst simulated window of `units` units of `batch` items, over one stage at a time
    running `SLOWER` slower."""
    return max(simulate_batch(layout, unit_seconds(slowed(costs, stage), batch), gpus, units).window_s
               for stage in range(len(costs)))


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


def choose_layout(costs: tuple[StageCost, ...], gpus: int, gpu_memory_mb: float, max_ranks: int | None = None,
                  units: int | None = None, batch: int = 1, split: str = "even") -> GpuLayout:
    """The fitting layout of at most `max_ranks` stage ranks (default 3 a GPU) whose batch of
    `units` units of `batch` items (default `LONG_BATCH` a GPU) ends first with any one stage
    `SLOWER` slower, among those within `NEAR` of the best such steady load (which, splitting a stage's
    work evenly between its ranks, is pessimistic); fewer ranks on a near tie."""
    limit = max_ranks or 3 * gpus
    fitting = [layout for layout in candidate_layouts(len(costs), limit)
               if fits(layout, costs, gpus, gpu_memory_mb, split)]
    if not fitting:
        needs = ", ".join(f"{c.peak_memory_mb / 1024:.1f}" for c in costs)
        raise UserError(f"no layout of up to {limit} stage ranks on {gpus} GPUs fits {gpu_memory_mb / 1024:.1f} GiB a "
                        f"GPU (the stages' peaks are {needs} GiB); fix: more GPUs, a higher --gpu-memory-gib, "
                        "or --stage-ranks")
    steady = {layout: worst_load(layout, costs, gpus) for layout in fitting}
    best = min(steady.values())
    units = units or LONG_BATCH * gpus
    windows = {layout: batch_window(layout, costs, gpus, units, batch)
               for layout in fitting if steady[layout] <= best * (1 + NEAR)}
    shortest = min(windows.values())
    layout = min((layout for layout, window in windows.items() if window <= shortest * (1 + TIE)),
                 key=lambda layout: (sum(layout), windows[layout]))
    run = simulate_batch(layout, unit_seconds(costs, batch), gpus, units)
    return GpuLayout(layout, evaluate(layout, costs, gpus, gpu_memory_mb, split), gpus,
                     sum(c.seconds_per_item for c in costs), run)


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
