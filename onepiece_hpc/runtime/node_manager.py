"""Rank 0: hands out work units on request, commits outputs, watches every rank, and moves ranks
between stages when its policy says a move pays for itself."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from onepiece_hpc.runtime.control import TAG_TO_MANAGER, TAG_TO_WORKER, ControlPlane
from onepiece_hpc.runtime.cost_model import CostModel
from onepiece_hpc.runtime.drain import Drain
from onepiece_hpc.runtime.failures import FailureBudget, StageFailed, UnitFailure
from onepiece_hpc.planning.layout import StageLayout
from onepiece_hpc.runtime.liveness import Liveness, Verdict
from onepiece_hpc.runtime.messages import (
    Failure, Finished, Heartbeat, MoveDone, MoveOrder, Routes, Shutdown, UnitFailed, WorkGrant, WorkRequest,
)
from onepiece_hpc.runtime.peers import RankInfo
from onepiece_hpc.runtime.policy import PolicyInput, make_policy
from onepiece_hpc.runtime.interrupts import Terminated
from onepiece_hpc.runtime.prepare import Prepared
from onepiece_hpc.runtime.progress import ProgressReporter
from onepiece_hpc.runtime.pulse import PulseListener
from onepiece_hpc.runtime.watch import LoopWatch
from onepiece_hpc.runtime.telemetry import (
    StageSummary,
    Telemetry,
    can_hold,
    gpu_runs_stage,
    stage_memory_needs,
)
from onepiece_hpc.store.items import PlanItems
from onepiece_hpc.store.output import OutputWriter
from onepiece_hpc.store.telemetry import MOVE_DTYPE, RANK_DTYPE, SAMPLE_DTYPE, STAGE_DTYPE
from onepiece_hpc.transport import WaitPolicy
from onepiece_hpc.transport.connect import Channels

log = logging.getLogger(__name__)

LIVENESS_EVERY_S = 0.2
DEFAULT_LOAD_S = 1.0  # a move's load time before any has been measured


class UnitQueue:
    """Units not yet dispatched, in dispatch order: an index array and a cursor (10^7 units are
    80 MB here, not a deque of Python ints)."""

    def __init__(self, units: np.ndarray) -> None:
        self._units = units
        self._next = 0

    @classmethod
    def empty(cls) -> UnitQueue:
        return cls(np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self._units) - self._next

    def popleft(self) -> int:
        unit = int(self._units[self._next])
        self._next += 1
        return unit

    def remaining(self) -> np.ndarray:
        return self._units[self._next:]


class JobFailed(RuntimeError):
    """The staged run stopped; the message names the rank, host, stage and unit (or the lost host)."""

    def __init__(self, message: str, lost_hosts: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.lost_hosts = lost_hosts


@dataclass(frozen=True)
class StagedSummary:
    status: str  # "completed", or "preempted" when a drain stopped dispatch early
    items_total: int
    items_done: int
    committed_now: int
    seconds: float
    moves: int
    stages: list[StageSummary]
    items_failed: int = 0  # items of the output that failed and are not done, after this run
    failures: tuple = ()   # their units' records (store.journal.FailedUnit), in item order


@dataclass
class MoveRecord:
    started: float
    rank: int
    source: str
    target: str
    reason: str
    drain_s: float = float("nan")
    load_s: float = float("nan")


def initial_routes(layout: StageLayout) -> Routes:
    return Routes(0, {stage: list(layout.ranks[stage]) for stage in layout.topology})


class NodeManager:
    """Dispatch (pull), commit (rings -> HDF5), liveness, telemetry, progress and moves."""

    def __init__(self, prepared: Prepared, layout: StageLayout, channels: Channels, control: ControlPlane,
                 peers: list[RankInfo], policy: WaitPolicy, heartbeat_timeout_s: float, mode: str, *,
                 on_blocked: Callable[[Verdict, float], None], retry_failed: bool = False,
                 heartbeat_s: float = 1.0, pulse: PulseListener | None = None) -> None:
        self.prepared, self.layout, self.control, self.policy = prepared, layout, control, policy
        self.peers = peers
        self.mode = mode
        self.settings = prepared.job.policy
        self.rebalance = make_policy(self.settings)
        self.telemetry = Telemetry(topology=layout.topology)
        self.liveness = Liveness(peers, self.telemetry, heartbeat_timeout_s, heartbeat_s, pulse)
        # on_blocked(verdict, seconds) ends the job when the loop is blocked in a call to a dead peer
        self.watch = LoopWatch(self.liveness, self._verdict, self._check_liveness, on_blocked)
        self.topology = layout.topology
        self.routes = initial_routes(layout)
        self.costs = CostModel(prepared.plan, layout.topology)
        self._sources = [(rank, ch.consumer) for rank, ch in channels.inbound.items()]  # ranks whose outputs commit
        self._in_flight: dict[int, int] = {}  # unit dispatched and not yet committed -> its encode rank
        self.retry_failed = retry_failed
        self.budget = FailureBudget()  # units that failed: the units' own, or the stage's (runtime/failures.py)
        self._failed_before: np.ndarray | None = None
        self._pending: np.ndarray | None = None
        self.failed_units = 0
        self._moving: dict[int, MoveRecord] = {}
        self._cooling: dict[int, float] = {}
        self._loads: dict[str, list[float]] = {}
        self.moves: list[MoveRecord] = []
        self.drain = Drain()  # set by rank 0's drain signal: finish what is dispatched, until its deadline

    def run(self, progress: Callable[[int, int], ProgressReporter] | None = None) -> StagedSummary:
        plan = self.prepared.plan
        writer = OutputWriter.open(self.prepared.output, PlanItems(plan), self.prepared.layout, self.prepared.provenance,
                                   mode=self.mode, settings=self.prepared.store, run=self.prepared.run_info(self.mode))
        started = time.monotonic()
        status = "failed"
        self.watch.start()
        try:
            done = writer.done_mask()
            self._pending = writer.pending_mask(self.retry_failed)
            self._failed_before = writer.failed_mask()
            queue = UnitQueue(plan.pending_units(~self._pending))
            already = int(done.sum())
            with progress(len(plan.items), len(plan.items) - int(self._pending.sum())) if progress \
                    else nullcontext() as reporter:
                self._serve(queue, writer, reporter)
            status = "preempted" if len(queue) or self._in_flight else "completed"
            if status == "completed":
                self._record_failures(writer, self.budget.finish())
        except KeyboardInterrupt as stop:
            status = "terminated" if isinstance(stop, Terminated) else "interrupted"
            raise
        finally:
            self.watch.stop()
            self._record_telemetry(writer)
            writer.close(status)
        return StagedSummary(status=status, items_total=len(plan.items),
                             items_done=already + writer.committed_this_run,
                             committed_now=writer.committed_this_run, seconds=time.monotonic() - started,
                             moves=len(self.moves), stages=self.telemetry.stage_summaries(),
                             items_failed=int(writer.failed_mask().sum()), failures=tuple(writer.failures()))

    # -- the loop ----------------------------------------------------------------------------
    def _serve(self, queue: UnitQueue, writer: OutputWriter, reporter: ProgressReporter | None) -> None:
        pause = self.policy.first_sleep_s
        next_liveness = 0.0
        next_decision = time.monotonic() + self.settings.interval_s
        while (len(queue) or self._in_flight) and not self.drain.over(len(self._in_flight)):
            self.watch.tick()
            moved = self._handle_control(queue, reporter)
            moved |= self._commit_arrivals(writer, reporter)
            now = time.monotonic()
            if now >= next_liveness:
                next_liveness = now + LIVENESS_EVERY_S
                self._check_liveness()
                writer.sync_if_due()
                if reporter:
                    reporter.note(self.telemetry.busy_note())
            if self.liveness.settled(now):
                raise self._stopped()
            if now >= next_decision:
                next_decision = now + self.settings.interval_s
                self._decide(queue)
            if moved:
                pause = self.policy.first_sleep_s
            else:
                time.sleep(pause)
                pause = min(pause * 2, self.policy.max_sleep_s)
        self._broadcast(Shutdown("every unit is committed" if not (len(queue) or self._in_flight) else "drained"))
        self._await_finished()

    def _broadcast(self, message) -> None:
        for peer in self.peers[1:]:
            self.control.send(peer.rank, message, TAG_TO_WORKER)

    def _await_finished(self) -> None:
        """Collect every rank's last heartbeat and Finished note, so the telemetry is whole."""
        deadline = time.monotonic() + self.policy.timeout_s
        finished = self.liveness.finished
        while len(finished) < len(self.peers) - 1 and not self.drain.expired():
            self.watch.tick()
            if not self._handle_control(UnitQueue.empty()):
                self._check_liveness()
                if self.liveness.settled():
                    raise self._stopped()
                if time.monotonic() > deadline:
                    missing = sorted(set(range(1, len(self.peers))) - finished)
                    raise JobFailed(f"ranks {missing} did not say they finished within "
                                    f"{self.policy.timeout_s:.0f} s after the last commit")
                time.sleep(self.policy.max_sleep_s)

    def _handle_control(self, queue: UnitQueue, reporter: ProgressReporter | None = None) -> bool:
        arrived = self.control.poll(TAG_TO_MANAGER)
        for source, message in arrived:
            if isinstance(message, WorkRequest):
                serving = source in self.routes.of(self.topology.first)
                unit = queue.popleft() if len(queue) and serving and not self.drain.is_set() else -1
                if unit >= 0:
                    self._in_flight[unit] = source
                self.control.send(source, self._grant(unit), TAG_TO_WORKER)
            elif isinstance(message, Heartbeat):
                self.telemetry.record(message)
            elif isinstance(message, MoveDone):
                self._arrived(message)
            elif isinstance(message, UnitFailed):
                self._unit_failed(message, reporter)
            elif isinstance(message, Failure):
                self.liveness.fail(message)
            elif isinstance(message, Finished):
                self.liveness.finished.add(source)
        return bool(arrived)

    def _unit_failed(self, failed: UnitFailed, reporter: ProgressReporter | None) -> None:
        """A stage rank could not run a unit: hold it as failed (its items are recorded once a later
        unit succeeds); stop the job when the stage itself is failing."""
        self._in_flight.pop(failed.unit, None)
        unit = self.prepared.plan.units[failed.unit]
        self.failed_units += 1
        log.warning("unit %d failed on rank %d (%s): %s", failed.unit, failed.rank, failed.stage, failed.error)
        try:
            self.budget.failed(UnitFailure(failed.unit, unit.start, unit.stop, failed.stage, failed.rank, failed.error),
                               again=bool(self._failed_before[unit.start:unit.stop].any()))
        except StageFailed as err:
            raise JobFailed(f"{err} Finished items are kept in {self.prepared.output}") from None
        if reporter:
            reporter.advance(int(self._pending[unit.start:unit.stop].sum()))
            reporter.note(f"{self.failed_units} unit(s) failed")

    @staticmethod
    def _record_failures(writer: OutputWriter, failures: list[UnitFailure]) -> None:
        for failure in failures:
            writer.record_failed(failure.start, failure.stop, failure.stage, failure.rank, failure.error)

    def _grant(self, unit: int) -> WorkGrant:
        """A unit with its items' inputs (-1: no work): the stage ranks hold no plan."""
        if unit < 0:
            return WorkGrant(-1)
        plan = self.prepared.plan
        start, stop = int(plan.bounds[unit]), int(plan.bounds[unit + 1])
        t = plan.table
        return WorkGrant(unit, start=start, params=int(t.param_ids[start]), prompts=t.prompts.rows(start, stop),
                         negative_prompts=t.negatives.rows(start, stop), seeds=t.seeds[start:stop].tolist())

    def _commit_arrivals(self, writer: OutputWriter, reporter: ProgressReporter | None) -> bool:
        moved = False
        for _, consumer in self._sources:
            message = consumer.try_receive()
            if message is None:
                continue
            moved = True
            with message:
                unit = self.prepared.plan.units[message.unit_id]
                timings = json.loads(message.meta)["timings"]
                seconds = np.array(timings) / unit.size
                count = writer.commit(unit.start, message.tensors,
                                      np.tile(seconds, (unit.size, 1)))
            self.costs.observe(unit.index, timings)
            self._in_flight.pop(unit.index, None)
            self._record_failures(writer, self.budget.succeeded())
            if reporter:
                reporter.advance(count)
        return moved

    # -- moves -----------------------------------------------------------------------------------
    def _decide(self, queue: UnitQueue) -> None:
        if self.settings.name == "static" or not self.costs.ready or self.drain.is_set():
            return
        needs = stage_memory_needs(self.telemetry.latest.values())
        view = self._view(queue, needs)
        moves = self.rebalance(view)
        movers: list[tuple[int, str, str, str]] = []
        for move in moves:
            source, target = self.topology.names[move.source], self.topology.names[move.target]
            members = self.routes.of(source)
            now = time.monotonic()
            free = [r for r in members if self._cooling.get(r, 0.0) <= now and self._fits(r, target, needs)]
            free.sort(key=lambda r: self.telemetry.latest[r].backlog if r in self.telemetry.latest else 0)
            room = min(move.count, len(members) - 1)  # a stage keeps one rank
            for rank in free:
                joining = [r for r, _, to, _ in movers if to == target]
                if room <= 0 or not self._adds_compute(rank, target, joining):
                    continue
                movers.append((rank, source, target, move.reason))
                members.remove(rank)
                room -= 1
        if not movers:
            return
        self.routes = Routes(self.routes.version + 1, self.routes.ranks)
        self._broadcast(self.routes)
        for rank, source, target, reason in movers:
            record = MoveRecord(time.monotonic() - self.telemetry.started, rank, source, target, reason)
            self._moving[rank] = record
            self.control.send(rank, MoveOrder(target, reason), TAG_TO_WORKER)
            log.info("moving rank %d from %s to %s: %s", rank, source, target, reason)

    def _arrived(self, done: MoveDone) -> None:
        record = self._moving.pop(done.rank)
        record.drain_s, record.load_s = done.drain_s, done.load_s
        self.moves.append(record)
        self._loads.setdefault(done.to, []).append(done.load_s)
        self._cooling[done.rank] = time.monotonic() + self.settings.cooldown_s
        self.routes.of(done.to).append(done.rank)
        self.routes = Routes(self.routes.version + 1, self.routes.ranks)
        self._broadcast(self.routes)

    def _view(self, queue: UnitQueue, needs: dict[str, float]) -> PolicyInput:
        now = time.monotonic()
        stages = self.topology.names
        serving = [len(self.routes.of(s)) for s in stages]
        for record in self._moving.values():
            serving[self.topology.index(record.target)] += 1
        movable = [sum(1 for r in self.routes.of(s) if self._cooling.get(r, 0.0) <= now) for s in stages]
        undispatched = queue.remaining()
        in_flight = np.array(sorted(self._in_flight), dtype=np.int64)
        unfinished = np.concatenate([in_flight, undispatched])
        # the first stage has the units not yet dispatched ahead of it; every later one, those not committed
        queues = tuple(self.costs.queue(i, undispatched if i == 0 else unfinished) for i in range(len(stages)))
        switch = tuple(float(np.mean(self._loads.get(s) or self._initial_loads(s))) for s in stages)
        fits = tuple(any(self._fits(r, s, needs) for t in stages if t != s for r in self.routes.of(t)) for s in stages)
        return PolicyInput(now=now, serving=tuple(serving), movable=tuple(movable), queues=queues,
                           switch_s=switch, fits=fits)

    def _gpu_of(self, rank: int) -> tuple[str, int] | None:
        beat = self.telemetry.latest.get(rank)
        return (self.peers[rank].host, beat.gpu) if beat and beat.gpu >= 0 else None

    def _adds_compute(self, rank: int, stage: str, joining: list[int]) -> bool:
        """A move adds compute to `stage` unless the rank's GPU already runs it (in a rank that
        serves it, is moving to it, or joins it in this decision)."""
        others = {*self.routes.of(stage), *joining, *(r for r, m in self._moving.items() if m.target == stage)} - {rank}
        return not gpu_runs_stage(self._gpu_of(rank), (self._gpu_of(r) for r in others))

    def _fits(self, rank: int, stage: str, needs: dict[str, float]) -> bool:
        return can_hold(self.telemetry.latest.get(rank), stage, needs)

    def _initial_loads(self, stage: str) -> list[float]:
        loads = [b.load_s for r, b in self.telemetry.latest.items() if self.layout.stage_of(r) == stage]
        return loads or [DEFAULT_LOAD_S]

    # -- failures ------------------------------------------------------------------------------
    def _check_liveness(self) -> None:
        self.liveness.check(self._where)

    def _where(self, rank: int) -> tuple[str, int]:
        """The stage a rank serves (and where it is moving to) and the unit in its hands, as last heard."""
        beat = self.telemetry.latest.get(rank)
        stage = beat.stage if beat else self.layout.stage_of(rank)
        if rank in self._moving:
            stage = f"{stage} (moving to {self._moving[rank].target})"
        return stage, beat.unit if beat else -1

    def _describe_unit(self, unit: int) -> str:
        if unit < 0:
            return "no unit in hand"
        items = self.prepared.plan.units[unit]
        return f"unit {unit} (items {items.start}..{items.stop - 1})"

    def _verdict(self) -> Verdict:
        return self.liveness.verdict(self._where, self._describe_unit, str(self.prepared.output))

    def _stopped(self) -> JobFailed:
        if not self.liveness.claim_verdict():  # the watch found the loop blocked and ends the job
            while True:
                time.sleep(60.0)
        verdict = self._verdict()
        return JobFailed(verdict.message, verdict.lost_hosts)

    # -- record ------------------------------------------------------------------------------
    def _record_telemetry(self, writer: OutputWriter) -> None:
        t = self.telemetry
        ranks = np.array([
            (p.rank, p.host, b.stage, b.units_done, b.busy_s, b.wait_s, b.send_s, b.elapsed_s, b.load_s,
             t.peak_memory.get(p.rank, 0.0), t.links.get(p.rank, ""))
            for p in self.peers[1:] if (b := t.latest.get(p.rank)) is not None
        ], dtype=RANK_DTYPE)
        samples = np.array([(at, b.rank, b.state, b.stage, b.unit, b.units_done, b.busy_s, b.wait_s, b.send_s,
                             b.backlog, b.memory_mb) for at, b in t.samples], dtype=SAMPLE_DTYPE)
        stages = np.array([(s.stage, s.ranks, s.units, s.busy_share, s.wait_share, s.send_share,
                            s.mean_service_s, s.peak_memory_mb) for s in t.stage_summaries()], dtype=STAGE_DTYPE)
        moves = np.array([(m.started, m.rank, m.source, m.target, m.reason, m.drain_s, m.load_s,
                           m.drain_s + m.load_s) for m in self.moves], dtype=MOVE_DTYPE)
        writer.record_telemetry(ranks, samples, stages, moves,
                                {"layout": self.layout.describe(), "mode": self.mode, "policy": self.settings.name})

