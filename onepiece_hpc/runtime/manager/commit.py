"""The commit path: outputs that reach rank 0's inbound rings (from the last stage's ranks) go
to the writer; units that a stage rank could not run are judged (runtime/failures.py).

Invariant: a unit's outputs are written once: it goes from dispatched to committed (runtime/
manager/units.py) before the write, so a second arrival of a unit, or of one never granted,
stops the run before anything is written; a unit's failure is recorded as its items' own only once a later unit succeeds or the
run ends, so a failing stage stops the run without marking items it never really tried.

A ring whose producer can't be reached (its credit, or the poll of the ring, fails in the
transport) is read no more, and the error goes to liveness, whose verdict names the lost host
(runtime/liveness.py): it does not end the run here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from onepiece_hpc.runtime.cost_model import CostModel
from onepiece_hpc.runtime.failures import FailureBudget, StageFailed, UnitFailure
from onepiece_hpc.runtime.manager.live import LiveBook
from onepiece_hpc.runtime.manager.outcome import JobFailed
from onepiece_hpc.runtime.manager.units import UnitBook
from onepiece_hpc.runtime.messages import UnitFailed
from onepiece_hpc.runtime.prepare import Prepared
from onepiece_hpc.runtime.progress import ProgressReporter
from onepiece_hpc.store.output import OutputWriter
from onepiece_hpc.transport.consumer import Consumer, ReceivedMessage
from onepiece_hpc.transport.errors import PeerUnreachable

log = logging.getLogger(__name__)


class InboundRings:
    """Rank 0's inbound rings, by producer rank, less those cut off: the first transport error on a
    ring goes to `on_unreachable` (liveness judges it) and the ring is read no more."""

    def __init__(self, inbound: Mapping[int, Consumer], on_unreachable: Callable[[PeerUnreachable], None]) -> None:
        self._rings = dict(inbound)
        self._on_unreachable = on_unreachable

    def __iter__(self) -> Iterator[tuple[int, Consumer]]:
        return iter(list(self._rings.items()))

    def receive(self, rank: int, consumer: Consumer) -> ReceivedMessage | None:
        """The ring's next message, or None (none yet, or the ring is cut off now)."""
        try:
            return consumer.try_receive()
        except PeerUnreachable as err:
            self.cut_off(rank, err)
            return None

    def release(self, rank: int, message: ReceivedMessage) -> None:
        """Give the slot back; the credit write to a producer that can't be reached cuts it off."""
        try:
            message.release()
        except PeerUnreachable as err:
            self.cut_off(rank, err)

    def cut_off(self, rank: int, err: PeerUnreachable) -> None:
        if self._rings.pop(rank, None) is not None:
            self._on_unreachable(err)


class Committer:
    """Rank 0's side of the last stage's rings, and the failure budget of this run's units."""

    def __init__(self, writer: OutputWriter, prepared: Prepared, sources: InboundRings, units: UnitBook,
                 costs: CostModel, pending: np.ndarray, live: LiveBook) -> None:
        self.writer, self.plan, self.layout, self.output = writer, prepared.plan, prepared.layout, prepared.output
        self.units, self.costs, self.live = units, costs, live
        self.sources = sources              # the rings whose outputs commit
        self.pending = pending                       # items this run generates
        self.failed_before = writer.failed_mask()    # items that failed in an earlier run
        self.budget = FailureBudget()
        self.failed_units = 0

    def commit_arrivals(self, reporter: ProgressReporter | None) -> bool:
        """Write whatever has arrived, one message per ring; True if anything did."""
        moved = False
        for rank, consumer in self.sources:
            message = self.sources.receive(rank, consumer)
            if message is None:
                continue
            moved = True
            unit = self.plan.units[message.unit_id]
            self.units.commit(unit.index)
            timings = json.loads(message.meta)["timings"]
            seconds = np.array(timings) / unit.size
            count = self.writer.commit(unit.start, message.tensors, np.tile(seconds, (unit.size, 1)))
            self.sources.release(rank, message)  # written first: the unit is committed whatever the credit meets
            self.costs.observe(unit.index, timings)
            self.live.committed(unit.index, count)
            self.record_failures(self.budget.succeeded())
            if reporter:
                reporter.refresh()
        return moved

    def unit_failed(self, failed: UnitFailed, reporter: ProgressReporter | None) -> None:
        """A stage rank could not run a unit: hold it as failed (its items are recorded once a later
        unit succeeds); JobFailed when the stage itself is failing."""
        self.units.fail(failed.unit)
        unit = self.plan.units[failed.unit]
        self.failed_units += 1
        log.warning("unit %d failed on rank %d (%s): %s", failed.unit, failed.rank, failed.stage, failed.error)
        try:
            self.budget.failed(UnitFailure(failed.unit, unit.start, unit.stop, failed.stage, failed.rank, failed.error),
                               again=bool(self.failed_before[unit.start:unit.stop].any()))
        except StageFailed as err:
            raise JobFailed(f"{err} Finished items are kept in {self.output}") from None
        self.live.failed(unit.index, int(self.pending[unit.start:unit.stop].sum()))
        if reporter:
            reporter.refresh()
            reporter.note(f"{self.failed_units} unit(s) failed")

    def finish(self) -> None:
        """Every unit was tried: record the failures still held (StageFailed: the stage is failing)."""
        self.record_failures(self.budget.finish())

    def record_failures(self, failures: list[UnitFailure]) -> None:
        for failure in failures:
            self.writer.record_failed(failure.start, failure.stop, failure.stage, failure.rank, failure.error)
