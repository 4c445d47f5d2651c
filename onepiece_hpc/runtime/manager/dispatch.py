"""Pull dispatch: a first-stage rank with room asks, rank 0 answers with the next planned unit
and everything its first stage needs (stage ranks hold no plan), or with "none" (-1).

Invariant: a unit is granted only to a rank that serves the first stage in the routes of the
moment, never during a drain, and never after `close` (the run has stopped dispatching).
"""

from __future__ import annotations

from onepiece_hpc.planning.plan import Plan
from onepiece_hpc.runtime.manager.units import UnitBook
from onepiece_hpc.runtime.messages import WorkGrant


class Dispatcher:
    def __init__(self, plan: Plan, units: UnitBook) -> None:
        self.plan, self.units = plan, units
        self._open = True

    def close(self) -> None:
        """Grant nothing more this run (after the serving loop: only goodbyes are left)."""
        self._open = False

    def answer(self, serving_first_stage: bool, draining: bool) -> WorkGrant:
        """The grant for a request from a rank that serves the first stage (or no longer does)."""
        if self._open and serving_first_stage and self.units.planned and not draining:
            return self.grant(self.units.dispatch())
        return WorkGrant(-1)

    def grant(self, unit: int) -> WorkGrant:
        """A unit with its items' inputs."""
        plan = self.plan
        start, stop = int(plan.bounds[unit]), int(plan.bounds[unit + 1])
        t = plan.table
        return WorkGrant(unit, start=start, params=int(t.param_ids[start]), prompts=t.prompts.rows(start, stop),
                         negative_prompts=t.negatives.rows(start, stop), seeds=t.seeds[start:stop].tolist())
