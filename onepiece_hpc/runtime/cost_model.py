"""What each unit will cost at each stage: the batch is known in advance (steps, guidance and
size of every unit), the seconds per unit of work are measured as units are committed."""

from __future__ import annotations

import numpy as np

from onepiece_hpc.runtime.policy.model import StageQueue
from onepiece_hpc.spec.plan import Plan

MIN_OBSERVED = 2  # committed units before the estimates are trusted


class CostModel:
    def __init__(self, plan: Plan) -> None:
        sizes = plan.unit_sizes().astype(float)
        per_params = np.array([p.steps * (2 if p.guidance > 1 else 1) for p in plan.params], dtype=float)
        forwards = per_params[plan.unit_param_ids()]
        # encode and decode scale with the items in a unit; denoise with items x denoiser forwards
        self.factors = np.stack([sizes, sizes * forwards, sizes])
        self.seconds = np.zeros(3)
        self.work = np.zeros(3)
        self.observed = 0

    def observe(self, unit: int, timings: list[float]) -> None:
        """A committed unit's measured seconds at each stage."""
        self.seconds += np.asarray(timings[:3], dtype=float)
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
        edges = np.flatnonzero(np.diff(costs)) + 1
        starts = np.concatenate([[0], edges])
        ends = np.concatenate([edges, [len(costs)]])
        return StageQueue(tuple((int(e - s), float(costs[s])) for s, e in zip(starts, ends)))
