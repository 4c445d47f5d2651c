"""Rank 0: hands out work units on request, commits outputs, watches every rank, and moves ranks
between stages when its policy says a move pays for itself.

The loop is a table of contents; each role lives in a room of its own (runtime/manager/):
dispatch, commit, moves, the units' states and the telemetry record. Liveness (which ranks live,
and the one message that names why a run stopped) is runtime/liveness.py, watched from a thread
(runtime/watch.py) in case the loop itself is blocked. A call of the loop's own that meets a
peer it can't reach (a ring's credit, a control message) is a question for liveness, never the
run's error by itself: the verdict names the lost host, or the error once the peer is heard again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING

from onepiece_hpc.planning.layout import StageLayout
from onepiece_hpc.planning.work import WorkMeter
from onepiece_hpc.runtime.control import TAG_TO_MANAGER, TAG_TO_WORKER, ControlPlane
from onepiece_hpc.runtime.cost_model import CostModel
from onepiece_hpc.runtime.drain import Drain
from onepiece_hpc.runtime.interrupts import Terminated
from onepiece_hpc.runtime.liveness import Liveness, Verdict
from onepiece_hpc.runtime.manager.commit import Committer, InboundRings
from onepiece_hpc.runtime.manager.dispatch import Dispatcher
from onepiece_hpc.runtime.manager.live import LiveBook
from onepiece_hpc.runtime.manager.moves import Moves, initial_routes
from onepiece_hpc.runtime.manager.outcome import JobFailed, StagedSummary
from onepiece_hpc.runtime.manager.record import record_telemetry
from onepiece_hpc.runtime.manager.turns import PhaseTurns
from onepiece_hpc.runtime.manager.units import UnitBook
from onepiece_hpc.runtime.messages import (
    Failure, Finished, Heartbeat, MoveDone, Shutdown, TurnDone, UnitFailed, WorkRequest,
)
from onepiece_hpc.runtime.peers import RankInfo
from onepiece_hpc.runtime.policy import make_policy
from onepiece_hpc.runtime.prepare import Prepared
from onepiece_hpc.runtime.progress import ProgressReporter
from onepiece_hpc.runtime.pulse import PulseListener
from onepiece_hpc.runtime.telemetry import Telemetry
from onepiece_hpc.runtime.watch import LoopWatch
from onepiece_hpc.store.items import PlanItems
from onepiece_hpc.store.output import OutputWriter
from onepiece_hpc.store.telemetry import LIVE_EVERY_S, LIVE_FIRST_S
from onepiece_hpc.transport import WaitPolicy
from onepiece_hpc.transport.connect import Channels
from onepiece_hpc.transport.errors import PeerUnreachable

if TYPE_CHECKING:
    from onepiece_hpc.observe.live import LiveSnapshot
    from onepiece_hpc.observe.publish import LivePublisher

__all__ = ["JobFailed", "NodeManager", "StagedSummary", "initial_routes"]

log = logging.getLogger(__name__)

LIVENESS_EVERY_S = 0.2
PUBLISH_EVERY_S = 1.0  # a live snapshot to the publisher (metrics, live JSON) at most this often


class NodeManager:
    """Dispatch (pull), commit (rings -> HDF5), liveness, telemetry, progress and moves."""

    def __init__(self, prepared: Prepared, layout: StageLayout, channels: Channels, control: ControlPlane,
                 peers: list[RankInfo], policy: WaitPolicy, heartbeat_timeout_s: float, mode: str, *,
                 on_blocked: Callable[[Verdict, float], None], retry_failed: bool = False,
                 heartbeat_s: float = 1.0, pulse: PulseListener | None = None,
                 publisher: LivePublisher | None = None, phase: int | None = None) -> None:
        self.prepared, self.layout, self.control, self.policy = prepared, layout, control, policy
        self.peers = peers
        self.mode = mode
        self.settings = prepared.job.policy
        self.telemetry = Telemetry(topology=layout.topology)
        self.liveness = Liveness(peers, self.telemetry, heartbeat_timeout_s, heartbeat_s, pulse)
        # on_blocked(verdict, seconds) ends the job when the loop is blocked in a call to a dead peer
        self.watch = LoopWatch(self.liveness, self._verdict, self._check_liveness, on_blocked)
        self.costs = CostModel(prepared.plan, layout.topology)
        self.moves = Moves(layout, self.settings, make_policy(self.settings), self.telemetry, peers,
                           send=self._send, broadcast=self._broadcast)
        # the rings whose outputs commit; one whose producer can't be reached is liveness's question
        self._sources = InboundRings({rank: ch.consumer for rank, ch in channels.inbound.items()}, self._unreachable)
        self.retry_failed = retry_failed
        self.drain = Drain()  # set by rank 0's drain signal: finish what is dispatched, until its deadline
        self.units: UnitBook | None = None        # from here on, set as the run opens its output
        self.dispatch: Dispatcher | None = None
        self.commits: Committer | None = None
        self.live: LiveBook | None = None
        self.publisher = publisher  # where live snapshots go (observe/publish.py); None: nowhere
        # a run in phases: whose turn it is on each GPU (runtime/manager/turns.py)
        self.turns = PhaseTurns(layout.chains(), phase, self._send) if phase else None

    def run(self, progress: Callable[[WorkMeter], ProgressReporter] | None = None) -> StagedSummary:
        plan = self.prepared.plan
        writer = OutputWriter.open(self.prepared.output, PlanItems(plan), self.prepared.layout, self.prepared.provenance,
                                   mode=self.mode, settings=self.prepared.store, run=self.prepared.run_info(self.mode))
        started = time.monotonic()
        status = "failed"
        self.watch.start()
        try:
            already = int(writer.done_mask().sum())
            pending = writer.pending_mask(self.retry_failed)
            self.units = UnitBook(plan.unit_count, plan.pending_units(~pending))
            self.dispatch = Dispatcher(plan, self.units)
            self.live = LiveBook(plan, self.telemetry, pending, str(self.prepared.output))
            self.commits = Committer(writer, self.prepared, self._sources, self.units, self.costs, pending, self.live)
            with progress(self.live.meter) if progress else nullcontext() as reporter:
                self._serve(writer, reporter)
            status = "preempted" if self.units.unfinished else "completed"
            if status == "completed":
                self.commits.finish()
        except KeyboardInterrupt as stop:
            status = "terminated" if isinstance(stop, Terminated) else "interrupted"
            raise
        finally:
            self.watch.stop()
            self._record(writer)
            writer.close(status)
        return StagedSummary(status=status, items_total=len(plan.items),
                             items_done=already + writer.committed_this_run,
                             committed_now=writer.committed_this_run, seconds=time.monotonic() - started,
                             moves=len(self.moves.done), stages=self.telemetry.stage_summaries(),
                             items_failed=int(writer.failed_mask().sum()), failures=tuple(writer.failures()),
                             phase_turns=self.turns.totals.turns if self.turns else 0,
                             weights_s=self.turns.totals.weights_s if self.turns else 0.0)

    # -- the loop ----------------------------------------------------------------------------
    def _serve(self, writer: OutputWriter, reporter: ProgressReporter | None) -> None:
        """Until every unit is committed (or a drain is over): messages, commits, liveness, moves."""
        pause = self.policy.first_sleep_s
        next_liveness = next_publish = 0.0
        next_record = time.monotonic() + LIVE_FIRST_S  # early, then every LIVE_EVERY_S
        next_decision = time.monotonic() + self.settings.interval_s
        while self.units.unfinished and not self.drain.over(self.units.in_flight):
            self.watch.tick()
            moved = self._handle_control(reporter)
            moved |= self.commits.commit_arrivals(reporter)
            if self.turns is not None:
                self.turns.give(new_work=bool(self.units.planned) and not self.drain.is_set())
            now = time.monotonic()
            if now >= next_liveness:
                next_liveness = now + LIVENESS_EVERY_S
                self._check_liveness()
                writer.sync_if_due()
                if reporter:
                    reporter.note(self.telemetry.busy_note())
                    reporter.refresh()
            if now >= next_publish:
                next_publish = now + PUBLISH_EVERY_S
                self._publish()
            if now >= next_record:
                next_record = now + LIVE_EVERY_S
                self._record(writer, live=True)
            if self.liveness.settled(now):
                raise self._stopped()
            if now >= next_decision:
                next_decision = now + self.settings.interval_s
                self._decide()
            if moved:
                pause = self.policy.first_sleep_s
            else:
                time.sleep(pause)
                pause = min(pause * 2, self.policy.max_sleep_s)
        self.dispatch.close()
        self._broadcast(Shutdown("drained" if self.units.unfinished else "every unit is committed"))
        self._await_finished()

    def snapshot(self, phase: str) -> LiveSnapshot | None:
        """The run as it stands (observe/live.py); None before the run opened its output."""
        if self.live is None:
            return None
        return self.live.snapshot(phase, self.units, self.peers, self.moves.done)

    def _publish(self) -> None:
        if self.publisher is not None:
            self.publisher.publish(self.snapshot("draining" if self.drain.is_set() else "running"))

    def _record(self, writer: OutputWriter, live: bool = False) -> None:
        """The run's telemetry: a live copy while it goes on, the final record as it closes."""
        units = self.live.unit_rows() if self.live is not None else None
        record_telemetry(writer, self.telemetry, self.peers, self.moves.done, units,
                         {"layout": self.layout.describe(), "mode": self.mode, "policy": self.settings.name},
                         live=live)

    def _decide(self) -> None:
        if self.settings.name != "static" and self.costs.ready and not self.drain.is_set():
            self.moves.decide(self.units, self.costs)

    def _broadcast(self, message) -> None:
        for peer in self.peers[1:]:
            self._send(peer.rank, message)

    def _await_finished(self) -> None:
        """Collect every rank's last heartbeat and Finished note, so the telemetry is whole."""
        deadline = time.monotonic() + self.policy.timeout_s
        finished = self.liveness.finished
        while len(finished) < len(self.peers) - 1 and not self.drain.expired():
            self.watch.tick()
            if not self._handle_control():
                self._check_liveness()
                if self.liveness.settled():
                    raise self._stopped()
                if time.monotonic() > deadline:
                    missing = sorted(set(range(1, len(self.peers))) - finished)
                    raise JobFailed(f"ranks {missing} did not say they finished within "
                                    f"{self.policy.timeout_s:.0f} s after the last commit")
                time.sleep(self.policy.max_sleep_s)

    def _handle_control(self, reporter: ProgressReporter | None = None) -> bool:
        """Every control message that has arrived, each to the room it is for."""
        try:
            arrived = self.control.poll(TAG_TO_MANAGER)
        except PeerUnreachable as err:
            self._unreachable(err)
            return False
        for source, message in arrived:
            if isinstance(message, WorkRequest):
                grant = self.dispatch.answer(self.moves.serves_first(source), self.drain.is_set())
                if grant.unit >= 0:
                    self.live.dispatched(grant.unit)
                self._send(source, grant)
            elif isinstance(message, Heartbeat):
                self.telemetry.record(message)
            elif isinstance(message, MoveDone):
                self.moves.arrived(message)
            elif isinstance(message, TurnDone):
                self.turns.done(message)
            elif isinstance(message, UnitFailed):
                self.commits.unit_failed(message, reporter)
            elif isinstance(message, Failure):
                self.liveness.fail(message)
            elif isinstance(message, Finished):
                self.liveness.finished.add(source)
                self.moves.finished(source)
        return bool(arrived)

    # -- failures ------------------------------------------------------------------------------
    def _check_liveness(self) -> None:
        self.liveness.check(self._where)

    def _send(self, rank: int, message) -> None:
        """A control message to a stage rank; one it can't reach is liveness's question."""
        try:
            self.control.send(rank, message, TAG_TO_WORKER)
        except PeerUnreachable as err:
            self._unreachable(err)

    def _unreachable(self, err: PeerUnreachable) -> None:
        """A call of the loop met a peer it can't reach. Not the run's error yet: liveness waits, as
        after any first failure, and its verdict ends the run (`_stopped`), naming the lost host, or
        this error where the peer is heard from again."""
        peer = err.peer.rank if err.peer is not None else -1
        if self.liveness.unreachable(f"{type(err).__name__}: {err}", peer):
            log.warning("rank 0: %s; waiting for liveness to tell whether the rank and its host live", err)

    def _where(self, rank: int) -> tuple[str, int]:
        """The stage a rank serves (and where it is moving to) and the unit in its hands, as last heard."""
        beat = self.telemetry.latest.get(rank)
        stage = beat.stage if beat else self.layout.stage_of(rank)
        return self.moves.where(rank, stage), beat.unit if beat else -1

    def _describe_unit(self, unit: int) -> str:
        if unit < 0:
            return "no unit in hand"
        items = self.prepared.plan.units[unit]
        return f"unit {unit} (items {items.start}..{items.stop - 1})"

    def _verdict(self) -> Verdict:
        in_flight = self.units.flying() if self.units is not None else ()
        return self.liveness.verdict(self._where, self._describe_unit, str(self.prepared.output), in_flight)

    def _stopped(self) -> JobFailed:
        if not self.liveness.claim_verdict():  # the watch found the loop blocked and ends the job
            while True:
                time.sleep(60.0)
        verdict = self._verdict()
        return JobFailed(verdict.message, verdict.lost_hosts)
