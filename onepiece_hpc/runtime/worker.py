"""A stage rank: load one stage, take units in, run them, pass the results on over rings."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

import torch

from onepiece_hpc.models.base import StageRunner
from onepiece_hpc.runtime.control import TAG_TO_MANAGER, TAG_TO_WORKER, ControlPlane
from onepiece_hpc.runtime.layout import NODE_MANAGER, StageLayout
from onepiece_hpc.runtime.messages import Failure, Finished, Heartbeat, RankState, WorkGrant, WorkRequest
from onepiece_hpc.runtime.monolithic import unit_input
from onepiece_hpc.runtime.peers import RankInfo, process_alive, resident_mb
from onepiece_hpc.runtime.prepare import Prepared
from onepiece_hpc.runtime.status import StatusFile
from onepiece_hpc.runtime.tensors import from_wire, to_wire
from onepiece_hpc.spec.job import Stage
from onepiece_hpc.transport import WaitPolicy
from onepiece_hpc.transport.balance import pick_consumer
from onepiece_hpc.transport.connect import Channels

log = logging.getLogger(__name__)


class ManagerGone(RuntimeError):
    """The Node Manager's process ended: nobody is left to commit, so stop."""


@dataclass
class Counters:
    """What a rank did, in seconds and units; read by the heartbeat thread."""

    state: RankState = RankState.LOADING
    unit: int = -1
    units_done: int = 0
    busy_s: float = 0.0
    wait_s: float = 0.0
    send_s: float = 0.0
    load_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    serving_since: float | None = None


class StageWorker:
    """The main loop of one stage rank."""

    def __init__(self, me: RankInfo, stage: Stage, prepared: Prepared, layout: StageLayout,
                 channels: Channels, control: ControlPlane, peers: list[RankInfo], policy: WaitPolicy,
                 heartbeat_s: float, status: StatusFile | None = None) -> None:
        self.me, self.stage, self.prepared, self.layout = me, stage, prepared, layout
        self.channels, self.control, self.policy = channels, control, policy
        self.manager = peers[NODE_MANAGER]
        self.heartbeat_s = heartbeat_s
        self.status = status
        self.counters = Counters()
        self._stop = threading.Event()
        self._producers = [channels.outbound[r].producer for r in layout.downstream(stage)]
        self._consumers = [channels.inbound[r].consumer for r in layout.upstream(stage)]
        self._next = 0

    # -- life --------------------------------------------------------------------------------
    def run(self) -> None:
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        try:
            t0 = time.monotonic()
            runner = self.prepared.model.adapter.load(self.stage, self.prepared.placement)
            self.counters.load_s = time.monotonic() - t0
            self.counters.state = RankState.SERVING
            self.counters.serving_since = time.monotonic()
            if self.stage is Stage.ENCODE:
                self._serve_work_from_manager(runner)
            else:
                self._serve_inbound(runner)
            self.counters.state = RankState.DRAINING
            for producer in self._producers:
                producer.finish(self.policy.timeout_s)
            self.counters.state = RankState.DONE
        except Exception as err:
            self.counters.state = RankState.FAILED
            self._report(err)
            raise
        finally:
            self._stop.set()
            beat.join()
        self.control.send(NODE_MANAGER, self.heartbeat(), TAG_TO_MANAGER)
        self.control.send(NODE_MANAGER, Finished(self.me.rank, self.counters.units_done), TAG_TO_MANAGER)

    def _report(self, err: Exception) -> None:
        peer = getattr(err, "peer", None)
        failure = Failure(rank=self.me.rank, host=self.me.host, stage=self.stage.value,
                          unit=self.counters.unit, error=f"{type(err).__name__}: {err}",
                          peer=peer.rank if peer is not None else -1)
        try:
            self.control.send(NODE_MANAGER, failure, TAG_TO_MANAGER)
        except Exception:  # the manager may be gone too; the error is logged by the caller
            log.debug("could not report the failure to the Node Manager", exc_info=True)

    # -- work in ---------------------------------------------------------------------------------
    def _serve_work_from_manager(self, runner: StageRunner) -> None:
        """Encode: ask the Node Manager for a unit whenever a downstream ring has room."""
        while True:
            self._wait(lambda: any(p.free_slots() > 0 for p in self._producers), "a free slot downstream")
            self.control.send(NODE_MANAGER, WorkRequest(self.me.rank), TAG_TO_MANAGER)
            grant = self._wait(lambda: self._grant(), "a work unit from the Node Manager")
            if grant.unit < 0:
                return
            self._run_unit(runner, grant.unit, {}, [])

    def _grant(self) -> WorkGrant | None:
        got = self.control.poll(TAG_TO_WORKER, NODE_MANAGER)
        return got[0][1] if got else None

    def _serve_inbound(self, runner: StageRunner) -> None:
        """Denoise and decode: take messages from every upstream ring until all have closed."""
        while True:
            message = self._wait(self._receive_any, "input from upstream ranks")
            if message is True:
                return
            with message:
                inputs = from_wire(message.tensors, message.specs)
                self._run_unit(runner, message.unit_id, inputs, json.loads(message.meta))

    def _receive_any(self):
        """A message from the next upstream ring that has one; True once every ring is closed."""
        count = len(self._consumers)
        for step in range(count):
            consumer = self._consumers[(self._next + step) % count]
            message = consumer.try_receive()
            if message is not None:
                self._next = (self._next + step + 1) % count
                return message
        return True if all(c.finished for c in self._consumers) else None

    # -- work out --------------------------------------------------------------------------------
    def _run_unit(self, runner: StageRunner, unit_index: int, inputs: dict[str, torch.Tensor],
                  timings: list[float]) -> None:
        plan = self.prepared.plan
        unit = plan.units[unit_index]
        self.counters.unit = unit_index
        if self.status:
            self.status.update(unit_index)
        request = unit_input(plan, unit)
        t0 = time.monotonic()
        outputs = runner(request, inputs)
        seconds = time.monotonic() - t0
        self.counters.busy_s += seconds
        self._send(unit_index, request.items, outputs, [*timings, seconds])
        self.counters.units_done += 1
        self.counters.unit = -1

    def _send(self, unit_index: int, items: tuple[int, ...], outputs: dict[str, torch.Tensor],
              timings: list[float]) -> None:
        t0 = time.monotonic()
        wire = to_wire(outputs)
        chosen = self._wait(self._pick_consumer, "a free slot downstream", account="send_s")
        self._producers[chosen].send(wire, unit_id=unit_index, item_ids=items,
                                     meta=json.dumps(timings).encode(), timeout_s=self.policy.timeout_s)
        self.counters.send_s += time.monotonic() - t0

    def _pick_consumer(self) -> int | None:
        choice = pick_consumer([p.free_slots() for p in self._producers], start=self._next)
        if choice is not None:
            self._next = choice + 1
        return choice

    # -- waiting -----------------------------------------------------------------------------
    def _wait(self, probe, what: str, account: str = "wait_s"):
        """Poll `probe` with backoff until it returns something but None or False.

        The time goes to the counter `account` ("send_s" for backpressure, which _send counts
        itself); the Node Manager's death ends the wait.
        """
        started = time.monotonic()
        pause = self.policy.first_sleep_s
        next_check = started + 1.0
        try:
            while True:
                found = probe()
                if found is not None and found is not False:
                    return found
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 1.0
                    if self.manager.host == self.me.host and not process_alive(self.manager.pid):
                        raise ManagerGone(f"rank {self.me.rank}: the Node Manager (rank 0, pid "
                                          f"{self.manager.pid}) ended while this rank waited for {what}")
                time.sleep(pause)
                pause = min(pause * 2, self.policy.max_sleep_s)
        finally:
            if account == "wait_s":
                self.counters.wait_s += time.monotonic() - started

    # -- telemetry -------------------------------------------------------------------------------
    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.control.send(NODE_MANAGER, self.heartbeat(), TAG_TO_MANAGER)
            except Exception:  # never let telemetry kill the rank; the manager notices silence
                log.debug("heartbeat failed", exc_info=True)

    def heartbeat(self) -> Heartbeat:
        c = self.counters
        elapsed = time.monotonic() - c.serving_since if c.serving_since else 0.0
        memory = (torch.cuda.memory_allocated() / 2**20 if self.prepared.placement.device.type == "cuda"
                  else resident_mb())
        return Heartbeat(rank=self.me.rank, state=c.state.value, stage=self.stage.value, unit=c.unit,
                         units_done=c.units_done, busy_s=c.busy_s, wait_s=c.wait_s,
                         send_s=c.send_s, elapsed_s=elapsed, load_s=c.load_s,
                         backlog=sum(p.in_flight for p in self._producers), memory_mb=memory)

