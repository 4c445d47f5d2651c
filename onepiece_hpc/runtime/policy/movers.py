"""Which ranks move: the policy says how many ranks go from one stage to another (Move); this
chooses the ranks, from an immutable snapshot of every stage rank (Fleet). The Node Manager
and the simulator both call it, so a simulated move is chosen as a real one would be.

Rules, in order, for each Move:
- a rank mid-move, or one still cooling down from its last move, stays;
- a rank whose memory limit can't hold the target stage's need stays (a stage's need: the most
  memory any rank took serving it; a rank with no known limit can hold any stage);
- a stage with work left keeps one rank serving it (with every consumer of a stage leaving, the
  units upstream of it would wait for good);
- a rank whose GPU already runs the target stage (in another rank serving it, moving to it, or
  chosen in this decision) stays: ranks sharing a GPU take turns, so it would add no compute;
- of the ranks left, the ones holding least (the soonest drained) go first, the rest in the
  fleet's order.

Invariant: pure and deterministic; each rank is chosen at most once per decision, never more
ranks than a Move's count, and never a rank that is moving or cooling; O(ranks + stages) work
plus a sort of each source stage's ranks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from onepiece_hpc.runtime.policy.model import Move, PolicyInput, StageQueue


@dataclass(frozen=True)
class Fleet:
    """Every stage rank at a decision, a tuple per field (position i is one rank), in the order
    of the routes (each stage's ranks as they receive work), ranks moving anywhere after them."""

    ranks: tuple[int, ...]
    stage: tuple[int, ...]               # the stage index it serves, or is moving to
    moving: tuple[bool, ...]             # ordered to move and not yet arrived
    cool_until: tuple[float, ...]        # it may move again from this time on
    load: tuple[float, ...]              # what it holds or has queued: the less, the sooner it drains
    memory_limit_mb: tuple[float, ...]   # the most memory it may take (0: no limit known)
    gpu: tuple[Hashable | None, ...]     # the device it runs on (None: a CPU rank, every rank adds compute)
    needs_mb: tuple[float, ...]          # per stage: the most memory a rank serving it took so far

    def __post_init__(self) -> None:
        columns = (self.stage, self.moving, self.cool_until, self.load, self.memory_limit_mb, self.gpu)
        if any(len(c) != len(self.ranks) for c in columns):
            raise ValueError(f"a fleet's columns must have one entry per rank ({len(self.ranks)}): "
                             f"{[len(c) for c in columns]}")
        if any(not 0 <= s < len(self.needs_mb) for s in self.stage):
            raise ValueError(f"a fleet's stages are 0..{len(self.needs_mb) - 1}: {sorted(set(self.stage))}")

    @property
    def stages(self) -> int:
        return len(self.needs_mb)

    def holds(self, i: int, stage: int) -> bool:
        """Whether rank position i can serve `stage` within its memory limit."""
        limit = self.memory_limit_mb[i]
        return not limit or self.needs_mb[stage] <= limit


@dataclass(frozen=True)
class RankMove:
    """Move rank `rank` from stage index `source` to stage index `target`."""

    rank: int
    source: int
    target: int
    reason: str


def counts(fleet: Fleet, now: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(serving, movable) per stage: ranks serving it or moving to it; of its serving ranks, those
    that may move now (not mid-move, not cooling down)."""
    serving, movable = [0] * fleet.stages, [0] * fleet.stages
    for stage, moving, cool in zip(fleet.stage, fleet.moving, fleet.cool_until):
        serving[stage] += 1
        if not moving and cool <= now:
            movable[stage] += 1
    return tuple(serving), tuple(movable)


def stage_fits(fleet: Fleet) -> tuple[bool, ...]:
    """Per stage: whether some rank serving another stage could hold it (where a rank could move
    in from). Ranks mid-move are not counted: they are spoken for."""
    fits = [False] * fleet.stages
    for i, (stage, moving) in enumerate(zip(fleet.stage, fleet.moving)):
        if moving:
            continue
        for target in range(fleet.stages):
            if target != stage and not fits[target] and fleet.holds(i, target):
                fits[target] = True
    return tuple(fits)


def fleet_input(fleet: Fleet, now: float, queues: Sequence[StageQueue], switch_s: Sequence[float],
                fits: Sequence[bool] | None = None) -> PolicyInput:
    """The policy's snapshot of `fleet` with each stage's queue and move cost; `fits` narrows
    stage_fits(fleet) where the caller knows more (the simulator's stages that fit no rank)."""
    serving, movable = counts(fleet, now)
    found = stage_fits(fleet)
    if fits is not None:
        found = tuple(a and b for a, b in zip(found, fits))
    return PolicyInput(now=now, serving=serving, movable=movable, queues=tuple(queues), switch_s=tuple(switch_s),
                       fits=found)


def choose_movers(fleet: Fleet, view: PolicyInput, moves: Sequence[Move]) -> list[RankMove]:
    """The ranks that carry out `moves` (the policy's answer to `view`), by the module's rules."""
    members: list[list[int]] = [[] for _ in range(fleet.stages)]  # positions serving each stage, not moving
    gpus: list[Counter] = [Counter() for _ in range(fleet.stages)]  # devices running each stage (or moving to it)
    for i, (stage, moving, gpu) in enumerate(zip(fleet.stage, fleet.moving, fleet.gpu)):
        if not moving:
            members[stage].append(i)
        if gpu is not None:
            gpus[stage][gpu] += 1
    staying = [len(m) for m in members]
    gone: set[int] = set()
    chosen: list[RankMove] = []
    for move in moves:
        source, target = move.source, move.target
        keep = 1 if view.queues[source].units else 0
        room = min(move.count, staying[source] - keep)
        if room <= 0:
            continue
        free = [i for i in members[source]
                if i not in gone and fleet.cool_until[i] <= view.now and fleet.holds(i, target)]
        free.sort(key=lambda i: fleet.load[i])
        for i in free:
            gpu = fleet.gpu[i]
            if gpu is not None and gpus[target][gpu]:
                continue
            chosen.append(RankMove(fleet.ranks[i], source, target, move.reason))
            gone.add(i)
            staying[source] -= 1
            if gpu is not None:
                gpus[source][gpu] -= 1
                gpus[target][gpu] += 1
            room -= 1
            if room == 0:
                break
    return chosen
