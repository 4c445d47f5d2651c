"""A stage rank: serve one stage, pass results on over rings, and move to another stage when the
Node Manager says so, in place (same process; host copies of weights kept for a move back).

The loop reads like the rank's life: take control messages (routes, work grants, moves,
shutdown), then do one piece of work (a carried unit, a unit from the manager, or a message
from a ring), and back off when there is nothing to do.

A move: the manager takes the rank out of its stage's routes and tells every rank; each rank
then sends the mover a fence over their ring, after anything it routed there before. The mover
keeps serving its old stage until it has every fence (so nothing sent to it is lost), keeps the
outputs it would pass to its new stage (it is about to serve that stage itself), swaps its
components, and reports ready; the manager then routes the new stage's input to it.

The rank's state (its life, the move and its fences, its work supply, its counters) is
runtime/rank_state.py, each change checked against its table (runtime/states.py); the stages it
has loaded are runtime/stage_runners.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque

import torch

from onepiece_hpc.models.base import UnitInput
from onepiece_hpc.runtime.control import TAG_TO_MANAGER, TAG_TO_WORKER, ControlPlane
from onepiece_hpc.runtime.failures import describe
from onepiece_hpc.planning.layout import NODE_MANAGER
from onepiece_hpc.runtime.messages import (
    Failure, Finished, Heartbeat, MoveDone, MoveOrder, PhaseTurn, RankState, Routes, Shutdown, UnitFailed,
    WorkGrant, WorkRequest,
)
from onepiece_hpc.runtime.peers import ManagerGone, RankInfo, await_abort, manager_gone, resident_mb
from onepiece_hpc.runtime.prepare import Prepared
from onepiece_hpc.runtime.rank_state import Counters, RankLife, WorkSupply
from onepiece_hpc.runtime.stage_runners import StageRunners
from onepiece_hpc.runtime.status import StatusFile
from onepiece_hpc.runtime.tensors import SEEDS, from_wire, to_wire
from onepiece_hpc.planning.plan import PlanSummary
from onepiece_hpc.transport import WaitPolicy
from onepiece_hpc.transport.balance import pick_consumer
from onepiece_hpc.transport.connect import Channels

log = logging.getLogger(__name__)


class ReportedFailure(RuntimeError):
    """This rank failed and told the Node Manager, which aborts the job (and names the root cause)."""

    def __init__(self, cause: str, manager: RankInfo, me: RankInfo) -> None:
        super().__init__(cause)
        self.cause, self.manager, self.me = cause, manager, me

    def await_abort(self) -> bool:
        """Wait for rank 0's abort (peers.await_abort); the caller ends the job if it never comes.
        True if rank 0 ended without aborting."""
        return await_abort(self.manager, self.me)


class ProtocolError(RuntimeError):
    """A message that can't be right here (a bug, or ranks of different versions)."""


class StageWorker:
    """The main loop of one stage rank."""

    def __init__(self, me: RankInfo, stage: str, prepared: Prepared, summary: PlanSummary, routes: Routes,
                 channels: Channels, control: ControlPlane, peers: list[RankInfo], policy: WaitPolicy,
                 heartbeat_s: float, status: StatusFile | None = None, warm_up: bool = False) -> None:
        self.me, self.stage, self.prepared, self.routes = me, stage, prepared, routes
        self.summary = summary  # the plan as a stage rank knows it: each unit's inputs come with its work
        self._params_ids = {params: index for index, params in enumerate(summary.params)}
        self.control, self.policy, self.heartbeat_s, self.status = control, policy, heartbeat_s, status
        self.warm_up = warm_up
        self.manager = peers[NODE_MANAGER]
        self.others = [p.rank for p in peers[1:] if p.rank != me.rank]
        self.consumers = {rank: ch.consumer for rank, ch in channels.inbound.items()}
        self.producers = {rank: ch.producer for rank, ch in channels.outbound.items()}
        self._links = channels.links()  # sent with the first heartbeat only: they don't change
        self.topology = prepared.model.adapter.topology
        self.counters = Counters(self.topology.names)
        self.life = RankLife(me.rank)      # loading, serving, draining (with its move), done
        self.supply = WorkSupply(me.rank)  # units asked of and granted by rank 0 (first stage)
        self.runners = StageRunners(prepared, summary)
        self.carry: deque[tuple[UnitInput, dict[str, torch.Tensor], list[float]]] = deque()
        self.shutdown = False              # rank 0 said every unit is committed (or the run drains)
        self.turns: deque[PhaseTurn] = deque()  # a phased run's turns on the GPU (runtime/phased_worker.py)
        self._next = 0
        self._stop = threading.Event()

    # -- life --------------------------------------------------------------------------------
    def run(self) -> None:
        beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beat.start()
        try:
            self._load()
            self.life.serve()
            self.counters.serving_since = time.monotonic()
            self.counters.enter(self.stage, None)
            pause = self.policy.first_sleep_s
            idle_since = None
            while not self.shutdown:
                looked = time.monotonic()
                if self._handle_control() | self._work():
                    pause = self.policy.first_sleep_s
                    if idle_since is not None:
                        self.counters.wait_s += looked - idle_since
                        idle_since = None
                    continue
                idle_since = idle_since or time.monotonic()
                self._check_manager(f"work as {self.stage}")
                time.sleep(pause)
                pause = min(pause * 2, self.policy.max_sleep_s)
            self.counters.enter(None, self.stage)
            self.life.done()
        except ManagerGone:
            self.life.fail()
            raise
        except Exception as err:
            self.life.fail()
            if not self._report(err):
                raise
            raise ReportedFailure(f"{type(err).__name__}: {err}", self.manager, self.me) from err
        finally:
            self._stop.set()
            beat.join()
        self.control.send(NODE_MANAGER, self.heartbeat(), TAG_TO_MANAGER)
        self.control.send(NODE_MANAGER, Finished(self.me.rank, self.counters.units_done), TAG_TO_MANAGER)

    def _load(self) -> None:
        """Bring this rank's stage in (and warm it up) before it serves."""
        self.counters.load_s = self.runners.load(self.stage)
        if self.warm_up:
            self.counters.load_s += self.runners.warm_up(self.stage, self.topology.before(self.stage))

    def _report(self, err: Exception) -> bool:
        """Tell the Node Manager; False if that failed too (the caller then ends the job itself)."""
        peer = getattr(err, "peer", None)
        failure = Failure(rank=self.me.rank, host=self.me.host, stage=self.stage,
                          unit=self.counters.unit, error=f"{type(err).__name__}: {err}",
                          peer=peer.rank if peer is not None else -1)
        try:
            self.control.send(NODE_MANAGER, failure, TAG_TO_MANAGER)
        except Exception:  # the manager may be gone too
            log.debug("could not report the failure to the Node Manager", exc_info=True)
            return False
        return True

    # -- control -----------------------------------------------------------------------------
    def _handle_control(self) -> bool:
        arrived = self.control.poll(TAG_TO_WORKER, NODE_MANAGER)
        for _, message in arrived:
            if isinstance(message, WorkGrant):
                self.supply.granted(message)
            elif isinstance(message, Routes):
                self._reroute(message)
            elif isinstance(message, MoveOrder):
                self.life.order(self._known(message.to), self.routes.version, message.reason)
                if self.status:
                    self.status.update(moving_to=message.to)
            elif isinstance(message, Shutdown):
                self.shutdown = True
            elif isinstance(message, PhaseTurn):
                self.turns.append(message)
        return bool(arrived)

    def _known(self, stage: str) -> str:
        if stage not in self.topology:
            raise ProtocolError(f"rank {self.me.rank} was told to move to {stage!r}, not a stage of this pipeline "
                                f"({self.topology.describe()})")
        return stage

    def _reroute(self, routes: Routes) -> None:
        """New routes; every rank they drop gets a fence, after whatever was sent to it before."""
        before = {r for stage in self.topology for r in self.routes.of(stage)}
        after = {r for stage in self.topology for r in routes.of(stage)}
        self.routes = routes
        for dropped in sorted(before - after - {self.me.rank}):
            self._send_to(dropped, [], unit=0, items=(), meta={"fence": routes.version})

    # -- work ----------------------------------------------------------------------------------
    def _work(self) -> bool:
        """Do one thing: finish a move, run a carried unit, a granted unit, or a ring message."""
        moving = self.life.moving
        if moving and not self.supply.awaited and self.life.fences_in(self.others):
            self._switch()
            return True
        if self.carry and not moving:
            request, inputs, timings = self.carry.popleft()
            self._run_unit(request, inputs, timings)
            return True
        grant = self.supply.take()
        if grant is not None:
            if grant.unit >= 0:
                self._run_unit(self._granted(grant), {}, [])
            return True
        if self.stage == self.topology.first and not moving and self.supply.may_ask and self._room_downstream():
            self.control.send(NODE_MANAGER, WorkRequest(self.me.rank), TAG_TO_MANAGER)
            self.supply.asked()
            return True
        found = self._receive_any()
        if found is None:
            return False
        self._serve_message(*found)
        return True

    def _serve_message(self, sender: int, message) -> bool | None:
        """Run the unit of a ring message: True if it was passed on, False if it failed; None for
        a fence."""
        with message:
            meta = json.loads(message.meta)
            if "fence" in meta:
                self.life.fenced(int(meta["fence"]), sender)
                return None
            expected = self.topology.before(self.stage)
            if meta.get("stage") != expected:
                raise ProtocolError(f"rank {self.me.rank} ({self.stage}) got a {meta.get('stage')} output "
                                    f"for unit {message.unit_id} from rank {sender}")
            inputs = from_wire(message.tensors, message.specs)
            seeds = tuple(inputs.pop(SEEDS).tolist())
            request = UnitInput(unit=message.unit_id, items=tuple(message.item_ids), prompts=(), negative_prompts=(),
                                seeds=seeds, params=self.summary.params[int(meta["params"])])
            return self._run_unit(request, inputs, meta["timings"])

    def _granted(self, grant: WorkGrant) -> UnitInput:
        """A granted unit's input, as the Node Manager sent it (a stage rank holds no plan)."""
        return UnitInput(unit=grant.unit, items=tuple(range(grant.start, grant.start + len(grant.seeds))),
                         prompts=tuple(grant.prompts), negative_prompts=tuple(grant.negative_prompts),
                         seeds=tuple(grant.seeds), params=self.summary.params[grant.params])

    def _receive_any(self):
        ranks = list(self.consumers)
        for step in range(len(ranks)):
            rank = ranks[(self._next + step) % len(ranks)]
            message = self.consumers[rank].try_receive()
            if message is not None:
                self._next = (self._next + step + 1) % len(ranks)
                return rank, message
        return None

    def _run_unit(self, request: UnitInput, inputs: dict[str, torch.Tensor], timings: list[float]) -> bool:
        """Run `request` through this rank's stage and pass it on; False if the unit failed."""
        self.counters.unit = request.unit
        if self.status:
            self.status.update(request.unit)
        t0 = time.monotonic()
        try:
            outputs = self.runners.run(self.stage, request, inputs)
        except Exception as err:  # this unit's failure, not the rank's: say so and serve the next one
            self._unit_failed(request, err)
            return False
        seconds = time.monotonic() - t0
        self.counters.ran(self.stage, seconds)
        timings = [*timings, seconds]
        moving = self.life.moving
        if moving and moving.to == self.topology.after(self.stage):
            self.carry.append((request, outputs, timings))  # ours to finish after the move
        else:
            self._pass_on(request, outputs, timings)
        self.counters.units_done += 1
        self.counters.unit = -1
        return True

    def _unit_failed(self, request: UnitInput, err: Exception) -> None:
        """Report a unit the stage could not run; the Node Manager records its items as failed (or
        stops the job when the stage itself is failing). Nothing of it is passed on."""
        self.control.send(NODE_MANAGER, UnitFailed(self.me.rank, self.me.host, self.stage, request.unit,
                                                   describe(err)), TAG_TO_MANAGER)
        self.counters.unit = -1
        self.runners.after_failure()

    def _downstream(self) -> list[int]:
        after = self.topology.after(self.stage)
        return [NODE_MANAGER] if after is None else self.routes.of(after)

    def _room_downstream(self) -> bool:
        return any(self.producers[r].free_slots() > 0 for r in self._downstream())

    def _pass_on(self, request: UnitInput, outputs: dict[str, torch.Tensor], timings: list[float]) -> None:
        """Send to the next stage's rank with the most free slots, waiting (and listening) if none."""
        started = time.monotonic()
        pause = self.policy.first_sleep_s
        while True:
            targets = self._downstream()
            choice = pick_consumer([self.producers[r].free_slots() for r in targets], start=self._next)
            if choice is not None:
                break
            if time.monotonic() - started > self.policy.timeout_s:
                raise TimeoutError(f"rank {self.me.rank}: no free slot at ranks {targets} within "
                                   f"{self.policy.timeout_s:.0f} s")
            self._handle_control()
            self._check_manager("a free slot downstream")
            time.sleep(pause)
            pause = min(pause * 2, self.policy.max_sleep_s)
        self._next = choice + 1
        producer = self.producers[targets[choice]]
        seeds = torch.tensor(request.seeds, dtype=torch.int64)
        wire = to_wire({**outputs, SEEDS: seeds}, device_ok=producer.accepts_device,
                       device_only=self.prepared.placement.device if producer.device_only else None)
        meta = {"stage": self.stage, "timings": timings, "params": self._params_ids[request.params]}
        self._send_to(targets[choice], wire, request.unit, request.items, meta)
        self.counters.send_s += time.monotonic() - started

    def _send_to(self, rank: int, wire, unit: int, items, meta: dict) -> None:
        self.producers[rank].send(wire, unit_id=unit, item_ids=items, meta=json.dumps(meta).encode(),
                                  timeout_s=self.policy.timeout_s)

    # -- moves ----------------------------------------------------------------------------------
    def _switch(self) -> None:
        """Drained: offload the old stage, load the new one, say so to rank 0."""
        moving, source = self.life.moving, self.stage
        drained = time.monotonic() - moving.started
        self.runners.offload(source)
        self.counters.enter(moving.to, source)
        self.life.switch()
        load_s = self.runners.load(moving.to)
        self.stage = moving.to
        self.supply.renew()
        self.life.arrived()
        self.counters.load_s += load_s
        if self.status:
            self.status.update(stage=self.stage, moving_to="")
        self.control.send(NODE_MANAGER, MoveDone(self.me.rank, source, moving.to, drained, load_s),
                          TAG_TO_MANAGER)

    # -- liveness and telemetry -----------------------------------------------------------------
    def _check_manager(self, what: str) -> None:
        if manager_gone(self.manager, self.me):
            raise ManagerGone(f"rank {self.me.rank}: the Node Manager (rank 0, pid {self.manager.pid}) "
                              f"ended while this rank waited for {what}")

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.control.send(NODE_MANAGER, self.heartbeat(), TAG_TO_MANAGER)
            except Exception:  # never let telemetry kill the rank; the manager notices silence
                log.debug("heartbeat failed", exc_info=True)

    @property
    def _gpu(self) -> int:
        device = self.prepared.placement.device
        return device.index if device.type == "cuda" and device.index is not None else -1

    def _take_links(self) -> str:
        links, self._links = self._links, ""
        return links

    def heartbeat(self) -> Heartbeat:
        c = self.counters
        elapsed = time.monotonic() - c.serving_since if c.serving_since else 0.0
        memory = (torch.cuda.max_memory_allocated() / 2**20 if self.prepared.placement.device_type == "cuda"
                  else resident_mb())
        downstream = [self.producers[r] for r in self._downstream() if r in self.producers]
        state = self.life.state
        times = c.stage_times(self.stage, live=state is not RankState.DONE)
        return Heartbeat(rank=self.me.rank, state=state.value, stage=self.stage, unit=c.unit,
                         units_done=c.units_done, busy_s=c.busy_s, wait_s=c.wait_s, send_s=c.send_s,
                         elapsed_s=elapsed, load_s=c.load_s, backlog=sum(p.in_flight for p in downstream),
                         memory_mb=memory, stage_busy_s=list(c.stage_busy_s), stage_units=list(c.stage_units),
                         stage_time_s=times, memory_limit_mb=self.prepared.placement.memory_limit_mb,
                         gpu=self._gpu, links=self._take_links(), weights_s=c.weights_s)
