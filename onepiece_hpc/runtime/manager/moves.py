"""Moves at rank 0: the routes (which ranks take each stage's input), where each rank is, and the
moves decided at each policy interval and carried out by the ranks.

A decision: the policy (runtime/policy/) says how many ranks should go from which stage to
which, from a snapshot of the queues and the ranks; the pure mover choice (runtime/policy/
movers.py) names the ranks; here they leave the routes (a Routes broadcast, so every rank fences
its ring to them), each gets its MoveOrder, and joins its new stage's routes when it says it has
arrived (MoveDone). The simulator makes the same two calls.

Invariant: a rank is in at most one stage's routes, and in none while it moves; every seat
change goes through the transition table (runtime/states.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onepiece_hpc.planning.layout import StageLayout
from onepiece_hpc.runtime.cost_model import CostModel
from onepiece_hpc.runtime.manager.units import UnitBook
from onepiece_hpc.runtime.messages import MoveDone, MoveOrder, Routes
from onepiece_hpc.runtime.peers import RankInfo
from onepiece_hpc.runtime.policy import Policy, PolicySettings
from onepiece_hpc.runtime.policy.movers import Fleet, choose_movers, fleet_input
from onepiece_hpc.runtime.states import SEAT_TRANSITIONS, RankSeat, advance
from onepiece_hpc.runtime.telemetry import Telemetry, stage_memory_needs

log = logging.getLogger(__name__)

DEFAULT_LOAD_S = 1.0  # a move's load time before any has been measured


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


class Moves:
    """The routes, each stage rank's seat, and the record of every move; `send(rank, message)`
    and `broadcast(message)` reach the stage ranks."""

    def __init__(self, layout: StageLayout, settings: PolicySettings, rebalance: Policy, telemetry: Telemetry,
                 peers: list[RankInfo], send: Callable[[int, object], None],
                 broadcast: Callable[[object], None]) -> None:
        self.layout, self.topology, self.settings, self.rebalance = layout, layout.topology, settings, rebalance
        self.telemetry, self.peers, self._send, self._broadcast = telemetry, peers, send, broadcast
        self.routes = initial_routes(layout)
        self.seats = {rank: RankSeat.SERVING for stage in self.topology for rank in layout.ranks[stage]}
        self.moving: dict[int, MoveRecord] = {}  # rank -> its move under way
        self.cooling: dict[int, float] = {}      # rank -> when it may move again
        self.loads: dict[str, list[float]] = {}  # stage -> measured load seconds of moves into it
        self.done: list[MoveRecord] = []

    def serves_first(self, rank: int) -> bool:
        return rank in self.routes.of(self.topology.first)

    def where(self, rank: int, stage: str) -> str:
        """`stage` (as the rank last said), and where it is moving to if it is."""
        return f"{stage} (moving to {self.moving[rank].target})" if rank in self.moving else stage

    def finished(self, rank: int) -> None:
        self._seat(rank, RankSeat.FINISHED)

    # -- a decision --------------------------------------------------------------------------
    def decide(self, units: UnitBook, costs: CostModel) -> None:
        """Ask the policy, choose the ranks, take them out of the routes and order them to move."""
        fleet = self.fleet()
        now = time.monotonic()
        undispatched = units.undispatched()
        unfinished = np.concatenate([units.flying(), undispatched])
        # the first stage has the units not yet dispatched ahead of it; every later one, those not committed
        queues = [costs.queue(i, undispatched if i == 0 else unfinished) for i in range(len(self.topology))]
        switch = [float(np.mean(self.loads.get(s) or self._initial_loads(s))) for s in self.topology]
        view = fleet_input(fleet, now, queues, switch)
        movers = choose_movers(fleet, view, self.rebalance(view))
        if not movers:
            return
        names = self.topology.names
        leaving = {m.rank for m in movers}
        ranks = {stage: [r for r in members if r not in leaving] for stage, members in self.routes.ranks.items()}
        self.routes = Routes(self.routes.version + 1, ranks)
        self._broadcast(self.routes)
        for move in movers:
            source, target = names[move.source], names[move.target]
            self._seat(move.rank, RankSeat.MOVING)
            self.moving[move.rank] = MoveRecord(time.monotonic() - self.telemetry.started, move.rank, source,
                                                target, move.reason)
            self._send(move.rank, MoveOrder(target, move.reason))
            log.info("moving rank %d from %s to %s: %s", move.rank, source, target, move.reason)

    def arrived(self, done: MoveDone) -> None:
        """A rank has drained, loaded its new stage and is ready: route that stage's input to it."""
        self._seat(done.rank, RankSeat.SERVING)
        record = self.moving.pop(done.rank)
        record.drain_s, record.load_s = done.drain_s, done.load_s
        self.done.append(record)
        self.loads.setdefault(done.to, []).append(done.load_s)
        self.cooling[done.rank] = time.monotonic() + self.settings.cooldown_s
        ranks = {stage: list(members) for stage, members in self.routes.ranks.items()}
        ranks[done.to].append(done.rank)
        self.routes = Routes(self.routes.version + 1, ranks)
        self._broadcast(self.routes)

    # -- the snapshot ------------------------------------------------------------------------
    def fleet(self) -> Fleet:
        """Every stage rank as rank 0 knows it now: routes first, in their order, then ranks moving."""
        latest = self.telemetry.latest
        needs = stage_memory_needs(latest.values())
        order = [(rank, i, False) for i, stage in enumerate(self.topology) for rank in self.routes.of(stage)]
        order += [(rank, self.topology.index(m.target), True) for rank, m in self.moving.items()]
        beats = [latest.get(rank) for rank, _, _ in order]
        return Fleet(ranks=tuple(rank for rank, _, _ in order), stage=tuple(i for _, i, _ in order),
                     moving=tuple(moving for _, _, moving in order),
                     cool_until=tuple(self.cooling.get(rank, 0.0) for rank, _, _ in order),
                     load=tuple(float(b.backlog) if b else 0.0 for b in beats),
                     memory_limit_mb=tuple(b.memory_limit_mb if b else 0.0 for b in beats),
                     gpu=tuple((self.peers[rank].host, b.gpu) if b and b.gpu >= 0 else None
                               for (rank, _, _), b in zip(order, beats)),
                     needs_mb=tuple(needs.get(stage, 0.0) for stage in self.topology))

    def _initial_loads(self, stage: str) -> list[float]:
        loads = [b.load_s for r, b in self.telemetry.latest.items() if self.layout.stage_of(r) == stage]
        return loads or [DEFAULT_LOAD_S]

    def _seat(self, rank: int, seat: RankSeat) -> None:
        self.seats[rank] = advance(SEAT_TRANSITIONS, f"rank {rank}", self.seats[rank], seat)
