"""Rank 0: hands out work units on request, commits decoded outputs, watches every rank."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from onepiece_hpc.runtime.control import TAG_TO_MANAGER, TAG_TO_WORKER, ControlPlane
from onepiece_hpc.runtime.layout import StageLayout
from onepiece_hpc.runtime.messages import Failure, Finished, Heartbeat, WorkGrant, WorkRequest
from onepiece_hpc.runtime.peers import RankInfo, process_alive
from onepiece_hpc.runtime.prepare import Prepared
from onepiece_hpc.runtime.progress import ProgressReporter
from onepiece_hpc.runtime.telemetry import StageSummary, Telemetry
from onepiece_hpc.spec.job import Stage
from onepiece_hpc.store.output import OutputWriter
from onepiece_hpc.store.telemetry import RANK_DTYPE, SAMPLE_DTYPE, STAGE_DTYPE
from onepiece_hpc.transport import WaitPolicy
from onepiece_hpc.transport.connect import Channels

log = logging.getLogger(__name__)

SETTLE_S = 1.0  # after a first failure, wait this long for others, then report the root cause
LIVENESS_EVERY_S = 0.2


class JobFailed(RuntimeError):
    """The staged run stopped; the message names the rank, host, stage and unit."""


@dataclass(frozen=True)
class StagedSummary:
    status: str  # "completed", or "preempted" when a drain stopped dispatch early
    items_total: int
    items_done: int
    committed_now: int
    seconds: float
    stages: list[StageSummary]


class NodeManager:
    """Dispatch (pull), commit (decode -> rank 0 rings -> HDF5), liveness, telemetry, progress."""

    def __init__(self, prepared: Prepared, layout: StageLayout, channels: Channels, control: ControlPlane,
                 peers: list[RankInfo], policy: WaitPolicy, heartbeat_timeout_s: float, mode: str) -> None:
        self.prepared, self.layout, self.control, self.policy = prepared, layout, control, policy
        self.peers = peers
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.mode = mode
        self.telemetry = Telemetry(layout)
        self._decoders = [(rank, channels.inbound[rank].consumer) for rank in layout.ranks[Stage.DECODE]]
        self._dispatched: dict[int, int] = {}  # unit -> encode rank
        self._failures: list[Failure] = []
        self._first_failure_at: float | None = None
        self._finished: set[int] = set()
        self.drain = threading.Event()  # set (e.g. by SIGUSR1 before a walltime): finish what is dispatched

    def run(self, progress: Callable[[int, int], ProgressReporter] | None = None) -> StagedSummary:
        plan = self.prepared.plan
        writer = OutputWriter.open(self.prepared.output, plan, self.prepared.layout, self.prepared.provenance,
                                   mode=self.mode)
        started = time.monotonic()
        status = "failed"
        try:
            done = writer.done_mask()
            queue = deque(u.index for u in plan.units if not done[u.start:u.stop].all())
            outstanding = set(queue)
            already = int(done.sum())
            with progress(len(plan.items), already) if progress else nullcontext() as reporter:
                self._serve(queue, outstanding, writer, reporter)
            status = "preempted" if outstanding else "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            self._record_telemetry(writer)
            writer.close(status)
        return StagedSummary(status=status, items_total=len(plan.items), items_done=already + writer.committed_this_run,
                             committed_now=writer.committed_this_run, seconds=time.monotonic() - started,
                             stages=self.telemetry.stage_summaries())

    # -- the loop ----------------------------------------------------------------------------
    def _serve(self, queue: deque, outstanding: set[int], writer: OutputWriter,
               reporter: ProgressReporter | None) -> None:
        pause = self.policy.first_sleep_s
        next_liveness = 0.0
        while True:
            moved = self._handle_control(queue)
            moved |= self._commit_arrivals(writer, outstanding, reporter)
            now = time.monotonic()
            if now >= next_liveness:
                next_liveness = now + LIVENESS_EVERY_S
                self._check_liveness()
                if reporter:
                    reporter.note(self.telemetry.busy_note())
            if self._first_failure_at is not None and now - self._first_failure_at >= SETTLE_S:
                raise JobFailed(self._root_cause())
            if all(consumer.finished for _, consumer in self._decoders):
                break
            if moved:
                pause = self.policy.first_sleep_s
            else:
                time.sleep(pause)
                pause = min(pause * 2, self.policy.max_sleep_s)
        self._await_finished()
        undispatched = outstanding - set(self._dispatched)
        lost = outstanding - undispatched
        if lost or (undispatched and not self.drain.is_set()):
            first = min(lost or undispatched)
            raise JobFailed(f"every stage rank finished but {len(outstanding)} units were never committed "
                            f"(first: unit {first}); the output stays resumable")

    def _await_finished(self) -> None:
        """Collect every rank's last heartbeat and Finished note, so the telemetry is whole."""
        deadline = time.monotonic() + self.policy.timeout_s
        while len(self._finished) < len(self.peers) - 1:
            if not self._handle_control(deque()):
                self._check_liveness()
                if self._failures:
                    raise JobFailed(self._root_cause())
                if time.monotonic() > deadline:
                    missing = sorted(set(range(1, len(self.peers))) - self._finished)
                    raise JobFailed(f"ranks {missing} did not say they finished within "
                                    f"{self.policy.timeout_s:.0f} s after the last commit")
                time.sleep(self.policy.max_sleep_s)

    def _handle_control(self, queue: deque) -> bool:
        arrived = self.control.poll(TAG_TO_MANAGER)
        for source, message in arrived:
            if isinstance(message, WorkRequest):
                unit = queue.popleft() if queue and not self.drain.is_set() else -1
                if unit >= 0:
                    self._dispatched[unit] = source
                self.control.send(source, WorkGrant(unit), TAG_TO_WORKER)
            elif isinstance(message, Heartbeat):
                self.telemetry.record(message)
            elif isinstance(message, Failure):
                self._fail(message)
            elif isinstance(message, Finished):
                self._finished.add(source)
        return bool(arrived)

    def _commit_arrivals(self, writer: OutputWriter, outstanding: set[int],
                         reporter: ProgressReporter | None) -> bool:
        moved = False
        for _, consumer in self._decoders:
            message = consumer.try_receive()
            if message is None:
                continue
            moved = True
            with message:
                unit = self.prepared.plan.units[message.unit_id]
                seconds = np.array(json.loads(message.meta)) / unit.size
                count = writer.commit(unit.start, message.tensors["images"], np.tile(seconds, (unit.size, 1)))
            outstanding.discard(unit.index)
            if reporter:
                reporter.advance(count)
        return moved

    # -- failures ------------------------------------------------------------------------------
    def _fail(self, failure: Failure) -> None:
        self._failures.append(failure)
        if self._first_failure_at is None:
            self._first_failure_at = time.monotonic()

    def _check_liveness(self) -> None:
        me = self.peers[0]
        for peer in self.peers[1:]:
            if peer.rank in self._finished or any(f.rank == peer.rank for f in self._failures):
                continue
            gone = peer.host == me.host and not process_alive(peer.pid)
            silent = self.telemetry.silent_for(peer.rank)
            if gone or silent > self.heartbeat_timeout_s:
                stage = self.layout.stage_of(peer.rank)
                beat = self.telemetry.latest.get(peer.rank)
                why = (f"its process {peer.pid} is gone (killed or crashed)" if gone
                       else f"no heartbeat for {silent:.0f} s (it died, hangs, or its node is lost)")
                self._fail(Failure(rank=peer.rank, host=peer.host, stage=stage.value if stage else "?",
                                   unit=beat.unit if beat else -1, error=f"rank died: {why}"))

    def _root_cause(self) -> str:
        """One message: a rank that died or raised on its own, before ranks that blame a peer."""
        blamed = {f.peer for f in self._failures if f.peer >= 0}
        ordered = sorted(self._failures, key=lambda f: (f.peer >= 0, f.rank not in blamed))
        root = ordered[0]
        unit = f"unit {root.unit}" if root.unit >= 0 else "no unit in hand"
        if root.unit >= 0:
            items = self.prepared.plan.units[root.unit]
            unit += f" (items {items.start}..{items.stop - 1})"
        others = [f"rank {f.rank}" for f in ordered[1:]]
        tail = f"; also failed after it: {', '.join(others)}" if others else ""
        return (f"rank {root.rank} on {root.host}, stage {root.stage}, {unit}: {root.error}{tail}. "
                f"Finished items are kept in {self.prepared.output}; run the same command again to resume")

    # -- record ------------------------------------------------------------------------------
    def _record_telemetry(self, writer: OutputWriter) -> None:
        t = self.telemetry
        ranks = np.array([
            (p.rank, p.host, b.stage, b.units_done, b.busy_s, b.wait_s,
             b.send_s, b.elapsed_s, b.load_s, t.peak_memory.get(p.rank, 0.0))
            for p in self.peers[1:] if (b := t.latest.get(p.rank)) is not None
        ], dtype=RANK_DTYPE)
        samples = np.array([(at, b.rank, b.state, b.stage, b.unit, b.units_done, b.busy_s, b.wait_s, b.send_s,
                             b.backlog, b.memory_mb) for at, b in t.samples], dtype=SAMPLE_DTYPE)
        stages = np.array([(s.stage, s.ranks, s.units, s.busy_share, s.wait_share, s.send_share,
                            s.mean_service_s, s.peak_memory_mb) for s in t.stage_summaries()], dtype=STAGE_DTYPE)
        writer.record_telemetry(ranks, samples, stages, {"layout": self.layout.describe(), "mode": self.mode})
