"""Which rank serves which stage: a pure function of the job, the model's topology and the rank count."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from onepiece_hpc.errors import UserError
from onepiece_hpc.jobfile.job import Job
from onepiece_hpc.topology import Topology

NODE_MANAGER = 0


def min_ranks(topology: Topology) -> int:
    """The Node Manager plus one rank a stage."""
    return 1 + len(topology)


@dataclass(frozen=True)
class StageLayout:
    """Rank 0 is the Node Manager (dispatch, commit, write); ranks 1.. serve the stages, in the
    topology's order."""

    topology: Topology
    ranks: dict[str, tuple[int, ...]]

    def stage_of(self, rank: int) -> str | None:
        return next((stage for stage, ranks in self.ranks.items() if rank in ranks), None)

    def upstream(self, stage: str) -> tuple[int, ...]:
        """Ranks that send to `stage` (none for the first: it pulls work from the Node Manager)."""
        before = self.topology.before(stage)
        return self.ranks[before] if before else ()

    def downstream(self, stage: str) -> tuple[int, ...]:
        """Ranks `stage` sends to; the last stage sends its outputs to the Node Manager."""
        after = self.topology.after(stage)
        return self.ranks[after] if after else (NODE_MANAGER,)

    def describe(self) -> str:
        return ", ".join(f"{stage} {len(r)} (ranks {_span(r)})" for stage, r in self.ranks.items())

    def chains(self) -> tuple[tuple[int, ...], ...]:
        """For a run in phases: chain c is the c-th rank of every stage, in the pipeline's order
        (one GPU's ranks, which take turns on it). Refuses a layout whose stages have different
        rank counts: each chain needs one rank of every stage."""
        counts = {stage: len(ranks) for stage, ranks in self.ranks.items()}
        if len(set(counts.values())) != 1:
            chains = min(counts.values())
            asked = ", ".join(f"{stage} {count}" for stage, count in counts.items())
            even = ", ".join(f"{stage}: {chains}" for stage in counts)
            raise UserError(f"--phases runs one rank of every stage on each GPU, taking turns, but the layout has "
                            f"{asked}; fix: stages {{{even}}} with -n {1 + chains * len(counts)} (one chain of "
                            "stages a GPU), or run without --phases")
        return tuple(zip(*self.ranks.values()))


def _span(ranks: tuple[int, ...]) -> str:
    return f"{ranks[0]}" if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"


def default_split(topology: Topology, workers: int) -> dict[str, int]:
    """A split for jobs that give none: each stage with a default share gets that share of the
    ranks (at least one); the others (the denoisers) share what is left, the first of them taking
    any rank the division leaves over."""
    counts = {s.name: max(1, math.floor(workers * s.default_share)) for s in topology.stages if s.default_share}
    rest = [s.name for s in topology.stages if not s.default_share] or [topology.names[-1]]
    left = max(len(rest), workers - sum(counts.values()))
    for i, name in enumerate(rest):
        counts[name] = counts.get(name, 0) + left // len(rest) + (1 if i < left % len(rest) else 0)
    return {name: counts[name] for name in topology.names}


def _spare_goes_to(topology: Topology) -> str:
    """Where ranks the job's split leaves over go: the first stage that takes what is left."""
    return next((s.name for s in topology.stages if not s.default_share), topology.names[-1])


def check_stage_names(job: Job, topology: Topology) -> None:
    """Every name in the job's `stages:` is a stage of the model's pipeline."""
    unknown = [name for name in job.stages if name not in topology]
    if unknown:
        close = difflib.get_close_matches(unknown[0], topology.names, n=1)
        did_you = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"{job.where('stages')}: field 'stages' names {', '.join(repr(n) for n in unknown)}, which "
                        f"the model {job.model} has not{did_you}; fix: use its stages: {', '.join(topology.names)}")


def plan_layout(job: Job, size: int, topology: Topology) -> StageLayout:
    """Assign ranks 1..size-1 to stages, in stage order; refuse a job that asks for more.

    Without a `stages` field the split is `default_split`; with one, stages it leaves out get one
    rank and spare ranks join the denoiser.
    """
    check_stage_names(job, topology)
    workers = size - 1
    needed = min_ranks(topology)
    if size < needed:
        raise UserError(f"{size} ranks are too few: the staged runtime needs at least {needed} "
                        f"(rank 0 manages, one rank a stage: {', '.join(topology.names)}); fix: -n {needed} or "
                        "more, or --monolithic")
    if "stages" in job.field_lines:
        counts = {name: job.stages.get(name, 1) for name in topology.names}
    else:
        counts = default_split(topology, workers)
    asked = sum(counts.values())
    if asked > workers:
        wanted = " + ".join(f"{counts[s]} {s}" for s in topology.names)
        raise UserError(f"{job.where('stages')}: the job asks for {wanted} = {asked} stage ranks, but {size} "
                        f"ranks leave {workers} after the Node Manager (rank 0); fix: run with -n {asked + 1} "
                        "or lower 'stages'")
    counts[_spare_goes_to(topology)] += workers - asked
    ranks: dict[str, tuple[int, ...]] = {}
    first = 1
    for stage in topology.names:
        ranks[stage] = tuple(range(first, first + counts[stage]))
        first += counts[stage]
    return StageLayout(topology, ranks)
