"""The discrete-event simulation: ranks, bounded inbound rings, pull dispatch, join-the-shortest-
queue routing, moves that drain and load, and a policy called at a fixed interval, over the
stages of any topology.

It mirrors the staged runtime: first-stage ranks pull units from the Node Manager; a producer
hands its output to the consumer of the next stage with the most free slots, or waits (holding
its slot upstream) until one frees; a consumer holds at most `capacity` units, the one it works
on included; a moving rank stops receiving, drains what it holds, loads the new stage's
weights, and joins the new stage. The policy says how many ranks move and the runtime's own
mover choice (runtime/policy/movers.py) says which, from the same kind of snapshot the Node
Manager takes: so the last rank serving a stage that has work left never moves (with every
consumer of a stage on its way out, the pipeline would never move again), and the ranks that
hold least go first. A rank moving to the next stage keeps the outputs of its drain and
processes them itself after the switch, instead of queueing them at the stage it is about to
join (which is short of ranks: that is why it moves).

Service times come from the scenario, drawn per (unit, stage) before the run, so every policy
meets the same times and sim/bound.py's lower bound holds for each run. With a `control` model
(sim/control_plane.py) units are granted and committed by servers that take time: a first-stage
rank waits for its grant, a last-stage rank's output is done when its writer has committed it,
and a last-stage rank with `capacity` commits outstanding waits for a free slot, as at rank 0's
rings.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field

from onepiece_hpc.runtime.policy.model import Policy, PolicyInput, StageQueue
from onepiece_hpc.runtime.policy.movers import Fleet, choose_movers, fleet_input
from onepiece_hpc.sim.control_plane import MESSAGES_PER_MOVE, ControlModel
from onepiece_hpc.sim.scenario import Scenario

IDLE, BUSY, BLOCKED, LOADING = range(4)
DONE_UNIT, LOADED, TICK, COMMITTED, WRITER_SLOT = range(5)
RANK_MEMORY_MB = 1.0  # every simulated rank's memory: a stage fits it (need 0) or not (need inf)


@dataclass
class SimResult:
    policy: str
    ranks: int
    units: int
    makespan_s: float
    utilisation: dict[str, float]
    busy_rank_s: float
    idle_rank_s: float
    moving_rank_s: float
    moves: int
    decisions: int
    decision_ms_mean: float
    decision_ms_max: float
    split_start: tuple[int, ...]
    stage_units: tuple[int, ...] = ()   # units each stage finished (every one of them, in a run that ends)
    move_log: list[tuple[float, int, str, str]] = field(default_factory=list)
    control: dict[str, float] = field(default_factory=dict)  # rank 0's load, with a control model

    @property
    def throughput(self) -> float:
        """Units per second over the whole run."""
        return self.units / self.makespan_s if self.makespan_s else 0.0

    @property
    def efficiency(self) -> float:
        """The pipeline's efficiency: the share of all rank-seconds spent running units."""
        return self.busy_rank_s / (self.ranks * self.makespan_s) if self.makespan_s else 0.0

    def routes_moved(self) -> dict[str, int]:
        """Moves by route, e.g. {"decode -> denoise": 12}, in the order first made."""
        found: dict[str, int] = {}
        for _, _, source, target in self.move_log:
            found[f"{source} -> {target}"] = found.get(f"{source} -> {target}", 0) + 1
        return found


class Simulation:
    def __init__(self, scenario: Scenario, split: tuple[int, ...], policy: Policy | None, name: str,
                 interval_s: float = 5.0, cooldown_s: float = 30.0, seed: int = 0,
                 control: ControlModel | None = None) -> None:
        stages = len(scenario.topology)
        if sum(split) < 1 or any(n < 0 for n in split) or len(split) != stages:
            raise ValueError(f"bad split {split}: {stages} rank counts, one per stage of {scenario.name!r} "
                             f"({scenario.topology.describe()}), none negative, at least one rank")
        self.s, self.policy, self.name = scenario, policy, name
        self.interval_s, self.cooldown_s = interval_s, cooldown_s
        self.times = scenario.service_times(seed)  # drawn per (unit, stage): the same for every policy
        self.ranks = sum(split)
        self.split = tuple(split)
        self.stage = [i for i, n in enumerate(split) for _ in range(n)]
        self.target = list(self.stage)         # where a rank is headed (its stage unless moving)
        self.state = [IDLE] * self.ranks
        self.accepting = [True] * self.ranks
        self.inbox = [deque() for _ in range(self.ranks)]
        self.working = [-1] * self.ranks       # unit in hand (processing or blocked on)
        self.cooling_until = [0.0] * self.ranks
        self.last = stages - 1
        self.busy = [0.0] * stages
        self.stage_rank_s = [0.0] * stages
        self.stage_since = [0.0] * self.ranks
        self.moving_s = 0.0
        self.cap = scenario.capacity
        self.free = [[set() for _ in range(self.cap + 1)] for _ in range(stages)]
        for r in range(self.ranks):
            if self.stage[r] > 0:
                self.free[self.stage[r]][self.cap].add(r)
        self.blocked = [deque() for _ in range(stages)]  # producers of stage s-1 waiting for stage s
        self.unit_class = [k for k, c in enumerate(scenario.classes) for _ in range(c.count)]
        self.remaining = [[c.count for c in scenario.classes] for _ in range(stages)]
        self.next_unit = 0
        self.left = scenario.units
        self.events: list = []
        self.seq = 0
        self.now = 0.0
        self.measured = [[0.0, 0.0] for _ in range(stages)]  # observed seconds, nominal seconds
        self.decision_s: list[float] = []
        self.move_log: list[tuple[float, int, str, str]] = []
        self.draining: set[int] = set()
        self.carry = [[] for _ in range(self.ranks)]  # drain outputs a rank keeps for its next stage
        self.control = control
        self.outbound = [deque() for _ in range(self.ranks)]  # commit times of a last-stage rank's outputs

    # -- events -------------------------------------------------------------------------------
    def _push(self, at: float, kind: int, rank: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, rank))

    def run(self) -> SimResult:
        if self.control and self.control.top.saturated:
            self.now = math.inf  # rank 0's heartbeats alone take all its time: nothing is ever granted
            return self._result()
        for r in range(self.ranks):
            self._try_start(r)
        if self.policy is not None:
            self._push(0.0, TICK, -1)
        while self.left and self.events:
            self.now, _, kind, rank = heapq.heappop(self.events)
            if kind == DONE_UNIT:
                self._unit_done(rank)
            elif kind == LOADED:
                self._loaded(rank)
            elif kind == COMMITTED:
                self.left -= 1
            elif kind == WRITER_SLOT:
                self._writer_slot(rank)
            elif self.left:
                self._decide()
                self._push(self.now + self.interval_s, TICK, -1)
        if self.left:
            raise RuntimeError(f"{self.name}: simulation stalled with {self.left} units left")
        return self._result()

    # -- work -------------------------------------------------------------------------------
    def _occupancy(self, r: int) -> int:
        return len(self.inbox[r]) + (1 if self.working[r] >= 0 else 0)

    def _set_free(self, r: int, before: int) -> None:
        """Move rank r between free-slot buckets after its occupancy changed from `before`."""
        st = self.stage[r]
        if st == 0 or not self.accepting[r]:
            return
        self.free[st][self.cap - before].discard(r)
        self.free[st][self.cap - self._occupancy(r)].add(r)

    def _try_start(self, r: int) -> None:
        if self.state[r] != IDLE:
            return
        st = self.stage[r]
        if st == 0:
            if not self.accepting[r] or self.next_unit >= self.s.units:
                return self._maybe_load(r)
            unit = self.next_unit
            self.next_unit += 1
        elif self.inbox[r]:
            before = self._occupancy(r)
            unit = self.inbox[r].popleft()
            self.working[r] = unit
            self._set_free(r, before)
        else:
            return self._maybe_load(r)
        self.working[r] = unit
        cost = self.s.classes[self.unit_class[unit]].seconds[st]
        took = float(self.times[unit, st])
        self.measured[st][0] += took
        self.measured[st][1] += cost
        self.busy[st] += took
        self.state[r] = BUSY
        begins = self.control.grant(self.now, r) if st == 0 and self.control else self.now
        self._push(begins + took, DONE_UNIT, r)

    def _unit_done(self, r: int) -> None:
        st = self.stage[r]
        unit = self.working[r]
        self.remaining[st][self.unit_class[unit]] -= 1
        if st == self.last:
            if self.control:
                return self._commit(r)
            self.left -= 1
            self._release(r)
            return
        if r in self.draining and self.target[r] == st + 1:
            self.carry[r].append(unit)
            self._release(r)
            return
        self.state[r] = BLOCKED
        if not self._deliver(st + 1, unit):
            self.blocked[st + 1].append(r)
            return
        self._release(r)

    def _commit(self, r: int) -> None:
        """Last-stage rank r hands its output to its writer; it waits when `capacity` are outstanding."""
        done_at = self.control.commit(self.now, r)
        self._push(done_at, COMMITTED, r)
        outstanding = self.outbound[r]
        while outstanding and outstanding[0] <= self.now:
            outstanding.popleft()
        outstanding.append(done_at)
        if len(outstanding) <= self.cap:
            self._release(r)
        else:
            self.state[r] = BLOCKED
            self._push(outstanding[0], WRITER_SLOT, r)

    def _writer_slot(self, r: int) -> None:
        outstanding = self.outbound[r]
        while outstanding and outstanding[0] <= self.now:
            outstanding.popleft()
        self._release(r)

    def _deliver(self, st: int, unit: int) -> bool:
        """Hand `unit` to the stage-`st` rank with the most free slots; False if all are full."""
        for free in range(self.cap, 0, -1):
            bucket = self.free[st][free]
            if bucket:
                consumer = min(bucket) if len(bucket) < 8 else next(iter(bucket))
                before = self._occupancy(consumer)
                self.inbox[consumer].append(unit)
                self._set_free(consumer, before)
                self._try_start(consumer)
                return True
        return False

    def _release(self, r: int) -> None:
        """Rank r handed its output on: its slot frees, a blocked producer may go, r starts anew."""
        before = self._occupancy(r)
        self.working[r] = -1
        self.state[r] = IDLE
        self._set_free(r, before)
        if self.stage[r] > 0:
            self._unblock(self.stage[r])
        self._try_start(r)

    def _unblock(self, st: int) -> None:
        """Producers waiting to hand units to stage `st` go, as long as some rank of it has room."""
        waiting = self.blocked[st]
        while waiting:
            producer = waiting.popleft()
            if not self._deliver(st, self.working[producer]):
                waiting.appendleft(producer)
                return
            self._release(producer)

    # -- moves ------------------------------------------------------------------------------
    def _maybe_load(self, r: int) -> None:
        """A draining rank that holds nothing any more starts loading its new stage."""
        if r in self.draining and self.state[r] == IDLE and not self.inbox[r] and self.working[r] < 0:
            self.draining.discard(r)
            self.state[r] = LOADING
            took = self.s.load_s[self.target[r]]
            self.moving_s += took
            self._push(self.now + took, LOADED, r)

    def _loaded(self, r: int) -> None:
        old = self.stage[r]
        self.stage_rank_s[old] += self.now - self.stage_since[r]
        self.stage_since[r] = self.now
        self.stage[r] = self.target[r]
        self.state[r] = IDLE
        self.accepting[r] = True
        self.cooling_until[r] = self.now + self.cooldown_s
        st = self.stage[r]
        self.inbox[r].extend(self.carry[r])
        self.carry[r].clear()
        if st > 0:
            self.free[st][max(0, self.cap - self._occupancy(r))].add(r)
            self._unblock(st)
        self._try_start(r)

    def _start_move(self, r: int, to: int) -> None:
        st = self.stage[r]
        if st > 0:
            self.free[st][self.cap - self._occupancy(r)].discard(r)
        self.accepting[r] = False
        self.target[r] = to
        self.draining.add(r)
        if self.state[r] == BLOCKED and to == st + 1:  # keep the output it waits to hand on
            self.blocked[to].remove(r)
            self.carry[r].append(self.working[r])
            self._release(r)
        self.move_log.append((self.now, r, self.s.stages[st], self.s.stages[to]))
        self._maybe_load(r)

    # -- policy -----------------------------------------------------------------------------
    def fleet(self) -> Fleet:
        """Every rank as the Node Manager would see it: a rank not accepting work is moving; what
        it holds is its occupancy. A stage that fits no rank needs more memory than any has."""
        n = self.ranks
        return Fleet(ranks=tuple(range(n)), stage=tuple(self.target), moving=tuple(not a for a in self.accepting),
                     cool_until=tuple(self.cooling_until), load=tuple(self._occupancy(r) for r in range(n)),
                     memory_limit_mb=(RANK_MEMORY_MB,) * n, gpu=(None,) * n,
                     needs_mb=tuple(0.0 if fits else math.inf for fits in self.s.fits))

    def view(self, fleet: Fleet | None = None) -> PolicyInput:
        fleet = fleet or self.fleet()
        scale = [m[0] / m[1] if m[1] else 1.0 for m in self.measured]
        queues = [StageQueue(tuple((n, c.seconds[st] * scale[st]) for n, c in zip(self.remaining[st], self.s.classes)
                                   if n)) for st in range(len(self.s.topology))]
        return fleet_input(fleet, self.now, queues, self.s.load_s, fits=self.s.fits)

    def _decide(self) -> None:
        fleet = self.fleet()
        view = self.view(fleet)
        started = time.perf_counter()
        moves = self.policy(view)
        self.decision_s.append(time.perf_counter() - started)
        movers = choose_movers(fleet, view, moves)
        for move in movers:
            self._start_move(move.rank, move.target)
        if movers and self.control:  # a Routes broadcast to every rank, an order and a reply per mover
            top = self.control.top
            top.messages += self.ranks + MESSAGES_PER_MOVE * len(movers)

    def _result(self) -> SimResult:
        for r in range(self.ranks):
            self.stage_rank_s[self.stage[r]] += self.now - self.stage_since[r]
        busy = sum(self.busy)
        total = self.ranks * self.now
        util = {name: (self.busy[i] / self.stage_rank_s[i] if self.stage_rank_s[i] else 0.0)
                for i, name in enumerate(self.s.stages)}
        ms = [d * 1000 for d in self.decision_s] or [0.0]
        return SimResult(policy=self.name, ranks=self.ranks, units=self.s.units, makespan_s=self.now, utilisation=util,
                         busy_rank_s=busy, idle_rank_s=total - busy - self.moving_s, moving_rank_s=self.moving_s,
                         moves=len(self.move_log), decisions=len(self.decision_s),
                         decision_ms_mean=sum(ms) / len(ms), decision_ms_max=max(ms), split_start=self.split,
                         stage_units=tuple(self.s.units - sum(left) for left in self.remaining),
                         move_log=self.move_log, control=self.control.top_rates(self.now) if self.control else {})
