"""A stage rank's state: its life (loading, serving, draining, done), the move under way with
the fences it waits for, its work supply from rank 0, and what it did (the heartbeat's counters).

Invariant: every change of the life or of the supply goes through its transition table
(runtime/states.py); an order that can't be right where the rank is (a move while it moves, a
grant it did not ask for) raises IllegalTransition naming the rank and both states. Pure: no
MPI, torch or rings here; the heartbeat thread reads `RankLife.state` and `Counters`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from onepiece_hpc.runtime.messages import RankState, WorkGrant
from onepiece_hpc.runtime.states import RANK_TRANSITIONS, SUPPLY_TRANSITIONS, Supply, advance


@dataclass(frozen=True)
class Moving:
    """A move under way: to stage `to`, ordered under routes `version` (the routes that dropped
    this rank), at `started`."""

    to: str
    version: int
    started: float
    reason: str


class RankLife:
    """The rank's state, and while it drains, its move and the fences that arrived for it."""

    def __init__(self, rank: int) -> None:
        self.who = f"rank {rank}"
        self.state = RankState.LOADING
        self.moving: Moving | None = None
        self._fences: dict[int, set[int]] = {}  # routes version -> ranks whose fence arrived

    def _become(self, state: RankState) -> None:
        self.state = advance(RANK_TRANSITIONS, self.who, self.state, state)

    def serve(self) -> None:
        """Its stage is loaded: serve it."""
        self._become(RankState.SERVING)

    def order(self, to: str, version: int, reason: str) -> None:
        """Rank 0 ordered a move: serve on until every peer has fenced its ring to this rank."""
        self._become(RankState.DRAINING)
        self.moving = Moving(to, version, time.monotonic(), reason)

    def fenced(self, version: int, sender: int) -> None:
        """`sender` has sent everything it routed here before routes `version`."""
        self._fences.setdefault(version, set()).add(sender)

    def fences_in(self, peers: list[int]) -> bool:
        """Every one of `peers` has fenced its ring after the routes that dropped this rank."""
        return set(peers) <= self._fences.get(self.moving.version, set())

    def switch(self) -> Moving:
        """Drained: the old stage goes, the new one loads. Returns the move."""
        moving = self.moving
        self._become(RankState.LOADING)
        self._fences.pop(moving.version, None)
        return moving

    def arrived(self) -> None:
        """The new stage is loaded: serve it."""
        self._become(RankState.SERVING)
        self.moving = None

    def done(self) -> None:
        self._become(RankState.DONE)

    def fail(self) -> None:
        """The rank failed (left as it is if its life had already ended)."""
        if RANK_TRANSITIONS[self.state]:
            self._become(RankState.FAILED)


class WorkSupply:
    """A first-stage rank's units from rank 0: one request out at a time (Supply's table)."""

    def __init__(self, rank: int) -> None:
        self.who = f"rank {rank}'s work supply"
        self.state = Supply.READY
        self._grant: WorkGrant | None = None

    def _become(self, state: Supply) -> None:
        self.state = advance(SUPPLY_TRANSITIONS, self.who, self.state, state)

    @property
    def may_ask(self) -> bool:
        return self.state is Supply.READY

    @property
    def awaited(self) -> bool:
        """A grant is on its way or in hand: it must be served as the stage that asked."""
        return self.state in (Supply.ASKED, Supply.GRANTED)

    def asked(self) -> None:
        self._become(Supply.ASKED)

    def granted(self, grant: WorkGrant) -> None:
        self._become(Supply.GRANTED)
        self._grant = grant

    def take(self) -> WorkGrant | None:
        """The grant in hand, if any: a unit to run, or unit -1 (none is left: ask no more)."""
        if self.state is not Supply.GRANTED:
            return None
        grant, self._grant = self._grant, None
        self._become(Supply.EXHAUSTED if grant.unit < 0 else Supply.READY)
        return grant

    def renew(self) -> None:
        """After a move: a rank serving the first stage again may ask again."""
        if self.state is Supply.EXHAUSTED:
            self._become(Supply.READY)


@dataclass
class Counters:
    """What a rank did, in seconds and units; read by the heartbeat thread. Per-stage lists follow
    the order of `stages` (the pipeline's topology)."""

    stages: tuple[str, ...]
    unit: int = -1
    units_done: int = 0
    busy_s: float = 0.0
    wait_s: float = 0.0
    send_s: float = 0.0
    load_s: float = 0.0
    weights_s: float = 0.0  # moving the stage's weights in and out between phases
    started: float = field(default_factory=time.monotonic)
    serving_since: float | None = None
    stage_busy_s: list[float] = field(default_factory=list)
    stage_units: list[int] = field(default_factory=list)
    stage_time_s: list[float] = field(default_factory=list)
    stage_since: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.stage_busy_s = [0.0] * len(self.stages)
        self.stage_units = [0] * len(self.stages)
        self.stage_time_s = [0.0] * len(self.stages)

    def enter(self, stage: str | None, leaving: str | None) -> None:
        """Account the time spent in `leaving` up to now; time from now on goes to `stage`."""
        now = time.monotonic()
        if leaving is not None:
            self.stage_time_s[self.stages.index(leaving)] += now - self.stage_since
        self.stage_since = now

    def ran(self, stage: str, seconds: float) -> None:
        """A unit of `stage` took `seconds`."""
        self.busy_s += seconds
        index = self.stages.index(stage)
        self.stage_busy_s[index] += seconds
        self.stage_units[index] += 1

    def stage_times(self, stage: str, live: bool) -> list[float]:
        """Seconds served per stage, the current stint in `stage` included while `live`."""
        times = list(self.stage_time_s)
        if live and self.serving_since:
            times[self.stages.index(stage)] += time.monotonic() - self.stage_since
        return times
