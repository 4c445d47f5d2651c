"""What rank 0 shows of the run while it goes: each unit's dispatch and commit times (the
telemetry's `units` table), progress in work (planning/work.py's WorkMeter), and the
`LiveSnapshot` that the metrics, the live JSON and `onepiece status --watch` are made from.
Bookkeeping only: it sends nothing and writes nothing; node_manager.py hands its snapshots on."""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np

from onepiece_hpc.environment import slurm_job
from onepiece_hpc.observe.live import LiveSnapshot, RankLive, StageLive
from onepiece_hpc.planning.plan import Plan
from onepiece_hpc.planning.work import WorkMeter
from onepiece_hpc.runtime.manager.moves import MoveRecord
from onepiece_hpc.runtime.manager.units import UnitBook
from onepiece_hpc.runtime.peers import RankInfo
from onepiece_hpc.runtime.telemetry import Telemetry
from onepiece_hpc.store.telemetry import UNIT_DTYPE


class LiveBook:
    """Rank 0's running account: times on the telemetry's clock (seconds since it started)."""

    def __init__(self, plan: Plan, telemetry: Telemetry, pending: np.ndarray, output: str) -> None:
        self.plan, self.telemetry, self.output = plan, telemetry, output
        total = len(plan.items)
        self.meter = WorkMeter(total, plan.work_of(), total - int(pending.sum()), plan.work_of(~pending),
                               clock=self._now)
        self._dispatched: dict[int, float] = {}
        self._rows: list[tuple[int, int, float, float]] = []
        self.failed_items = 0

    def _now(self) -> float:
        return time.monotonic() - self.telemetry.started

    def dispatched(self, unit: int) -> None:
        self._dispatched[unit] = self._now()

    def committed(self, unit: int, items: int) -> None:
        self._done(unit, items, committed=True)

    def failed(self, unit: int, items: int) -> None:
        self.failed_items += items
        self._done(unit, items, committed=False)

    def _done(self, unit: int, items: int, committed: bool) -> None:
        record = self.plan.unit(unit)
        self.meter.add(items, self.plan.unit_work(record) * items / record.size)
        self._rows.append((unit, record.size, self._dispatched.pop(unit, math.nan),
                           self._now() if committed else math.nan))

    def unit_rows(self) -> np.ndarray:
        """The `units` table: every unit finished this run, and those still in flight (not committed)."""
        flying = [(unit, self.plan.unit(unit).size, at, math.nan) for unit, at in self._dispatched.items()]
        return np.array(self._rows + flying, dtype=UNIT_DTYPE)

    def snapshot(self, phase: str, units: UnitBook, peers: list[RankInfo], moves: list[MoveRecord]) -> LiveSnapshot:
        t = self.telemetry
        progress = self.meter.progress()
        beats = list(t.latest.values())
        summaries = t.stage_summaries()
        order = list(t.topology.names)
        queued = Counter()
        for beat in beats:  # a rank's backlog waits in the next stage's rings
            at = order.index(beat.stage) if beat.stage in order else -1
            if 0 <= at < len(order) - 1:
                queued[order[at + 1]] += beat.backlog
        stages = tuple(StageLive(stage=row.stage, ranks=row.ranks, units_done=row.units, busy_share=row.busy_share,
                                 mean_service_s=row.mean_service_s,
                                 backlog=units.planned if i == 0 else int(queued[row.stage]))
                       for i, row in enumerate(summaries))
        hosts = {p.rank: p.host for p in peers}
        ranks = tuple(RankLive(rank=b.rank, host=hosts.get(b.rank, ""), stage=b.stage, state=b.state,
                               memory_mb=b.memory_mb, peak_memory_mb=t.peak_memory.get(b.rank, b.memory_mb),
                               units_done=b.units_done, gpu=b.gpu)
                      for b in sorted(beats, key=lambda b: b.rank))
        return LiveSnapshot(
            output=self.output, job_name=self.plan.job.name, slurm_job=slurm_job()[0], phase=phase,
            unix_time=time.time(), elapsed_s=self._now(), items_total=progress.items_total,
            items_done=progress.items_done - self.failed_items, items_failed=self.failed_items,
            work_total=progress.work_total, work_done=progress.work_done,
            rate_items_per_s=progress.rate_items_per_s, rate_work_per_s=progress.rate_work_per_s,
            eta_s=progress.eta_s, moves=len(moves), moves_by_reason=dict(Counter(_reason(m.reason) for m in moves)),
            stages=stages, ranks=ranks)


def _reason(text: str) -> str:
    """A move's kind for a label: the policies start each reason with it ('rebalance: rates ...')."""
    kind, colon, _ = text.partition(":")
    return kind.strip()[:40] if colon and kind.strip() else "other"
