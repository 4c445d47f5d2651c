"""What each unit will cost at each stage: the batch is known in advance (steps, guidance and
size of every unit), the seconds per unit of work are measured as units are committed."""

from __future__ import annotations

import numpy as np

from onepiece_hpc.runtime.policy.model import StageQueue
from onepiece_hpc.planning.plan import Plan
from onepiece_hpc.topology import Topology, Work

MIN_OBSERVED = 2  # committed units before the estimates are trusted
#: a queue of more runs than this (units of many different costs, in mixed order) is handed to the
#: policy as this many segments of equal length, each at its units' mean cost: the total work stays
#: exact and the decision stays in milliseconds (3 x 10^6 runs took the policy 2.5 s)
MAX_RUNS = 2048


class CostModel:
    """Each stage's work per unit from its topology entry (items, or denoiser forwards), and the
    seconds a unit of that work took, as units commit."""

    def __init__(self, plan: Plan, topology: Topology) -> None:
        sizes = plan.unit_sizes().astype(float)
        per_params = np.array([p.steps * (2 if p.guidance > 1 else 1) for p in plan.params], dtype=float)
        forwards = per_params[plan.unit_param_ids()]
        self.factors = np.stack([sizes * forwards * s.share_of_steps if s.work is Work.FORWARDS else sizes
                                 for s in topology.stages])
        self.stages = len(topology)
        self.seconds = np.zeros(self.stages)
        self.work = np.zeros(self.stages)
        self.observed = 0

    def observe(self, unit: int, timings: list[float]) -> None:
        """A committed unit's measured seconds at each stage."""
        self.seconds += np.asarray(timings[:self.stages], dtype=float)
        self.work += self.factors[:, unit]
        self.observed += 1

    @property
    def ready(self) -> bool:
        return self.observed >= MIN_OBSERVED

    def queue(self, stage: int, units: np.ndarray) -> StageQueue:
        """The stage's remaining units (in dispatch order) as runs of equal estimated cost."""
        if not len(units):
            return StageQueue(())
        costs = self.factors[stage, units] * (self.seconds[stage] / self.work[stage])
        return StageQueue(runs_of(costs))


def runs_of(costs: np.ndarray, limit: int = MAX_RUNS) -> tuple[tuple[int, float], ...]:
    """Run-length encoding of per-unit costs, in order; past `limit` runs, `limit` segments of equal
    length at their mean cost (same units, same total seconds)."""
    edges = np.flatnonzero(np.diff(costs)) + 1
    if len(edges) < limit:
        starts = np.concatenate([[0], edges])
        ends = np.concatenate([edges, [len(costs)]])
        return tuple((int(e - s), float(costs[s])) for s, e in zip(starts, ends))
    bounds = np.unique(np.linspace(0, len(costs), limit + 1).astype(np.int64))
    sums = np.add.reduceat(costs, bounds[:-1])
    counts = np.diff(bounds)
    return tuple((int(n), float(total / n)) for n, total in zip(counts, sums))
