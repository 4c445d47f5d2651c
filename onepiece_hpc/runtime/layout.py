"""Which rank serves which stage: a pure function of the job and the rank count."""

from __future__ import annotations

from dataclasses import dataclass

from onepiece_hpc.errors import UserError
from onepiece_hpc.spec.job import Job, Stage

NODE_MANAGER = 0
MIN_RANKS = 1 + len(Stage)  # the Node Manager plus one rank a stage


@dataclass(frozen=True)
class StageLayout:
    """Rank 0 is the Node Manager (dispatch, commit, write); ranks 1.. serve the stages."""

    ranks: dict[Stage, tuple[int, ...]]

    def stage_of(self, rank: int) -> Stage | None:
        return next((stage for stage, ranks in self.ranks.items() if rank in ranks), None)

    def upstream(self, stage: Stage) -> tuple[int, ...]:
        """Ranks that send to `stage` (none for encode: it pulls work from the Node Manager)."""
        order = list(Stage)
        index = order.index(stage)
        return self.ranks[order[index - 1]] if index else ()

    def downstream(self, stage: Stage) -> tuple[int, ...]:
        """Ranks `stage` sends to; decode sends its outputs to the Node Manager."""
        order = list(Stage)
        index = order.index(stage)
        return self.ranks[order[index + 1]] if index + 1 < len(order) else (NODE_MANAGER,)

    def describe(self) -> str:
        return ", ".join(f"{stage.value} {len(r)} (ranks {_span(r)})" for stage, r in self.ranks.items())


def _span(ranks: tuple[int, ...]) -> str:
    return f"{ranks[0]}" if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"


def default_split(workers: int) -> dict[Stage, int]:
    """A split for jobs that give none: the denoiser dominates, so it gets what is left."""
    encode = max(1, workers // 8)
    decode = max(1, workers // 4)
    return {Stage.ENCODE: encode, Stage.DENOISE: workers - encode - decode, Stage.DECODE: decode}


def plan_layout(job: Job, size: int) -> StageLayout:
    """Assign ranks 1..size-1 to stages, in stage order; refuse a job that asks for more.

    Without a `stages` field the split is `default_split`; with one, spare ranks join denoise.
    """
    workers = size - 1
    stages_given = "stages" in job.field_lines
    if size < MIN_RANKS:
        raise UserError(f"{size} ranks are too few: the staged runtime needs at least {MIN_RANKS} "
                        "(rank 0 manages, one rank a stage); fix: -n 4 or more, or --monolithic")
    counts = dict(job.stages) if stages_given else default_split(workers)
    asked = sum(counts.values())
    if asked > workers:
        wanted = " + ".join(f"{counts[s]} {s.value}" for s in Stage)
        raise UserError(f"{job.where('stages')}: the job asks for {wanted} = {asked} stage ranks, but {size} "
                        f"ranks leave {workers} after the Node Manager (rank 0); fix: run with -n {asked + 1} "
                        "or lower 'stages'")
    counts[Stage.DENOISE] += workers - asked  # spare ranks go where the work is
    ranks: dict[Stage, tuple[int, ...]] = {}
    first = 1
    for stage in Stage:
        ranks[stage] = tuple(range(first, first + counts[stage]))
        first += counts[stage]
    return StageLayout(ranks)
