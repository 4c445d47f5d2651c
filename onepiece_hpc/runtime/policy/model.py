"""What a policy sees and what it decides: plain, immutable data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: the policies a job file's `policy.name` or `onepiece run --policy` may name (registry.make_policy)
POLICIES = ("static", "adaptive")


@dataclass(frozen=True)
class StageQueue:
    """The units a stage has still to process, in dispatch order, run-length encoded:
    `runs` holds (units, seconds one rank needs per unit). An offline batch knows these."""

    runs: tuple[tuple[int, float], ...]

    @property
    def units(self) -> int:
        return sum(count for count, _ in self.runs)

    def head(self, units: int, skip: int = 0) -> tuple[int, float]:
        """(units taken, their total seconds) for the `units` units of the queue that follow its
        first `skip` units."""
        taken, seconds = 0, 0.0
        for count, cost in self.runs:
            if skip >= count:
                skip -= count
                continue
            use = min(count - skip, units - taken)
            skip = 0
            taken += use
            seconds += use * cost
            if taken >= units:
                break
        return taken, seconds


@dataclass(frozen=True)
class PolicyInput:
    """A snapshot the policy decides on. Tuples are indexed by stage, in pipeline order."""

    now: float
    serving: tuple[int, ...]       # ranks serving each stage, counting ranks already moving in
    movable: tuple[int, ...]       # of those, ranks that may move now (not mid-move, not cooling down)
    queues: tuple[StageQueue, ...]
    switch_s: tuple[float, ...]    # seconds a move into each stage costs (drain + load)
    fits: tuple[bool, ...]         # whether each stage fits in a rank's memory

    @property
    def ranks(self) -> int:
        return sum(self.serving)


@dataclass(frozen=True)
class Move:
    """Move `count` ranks from stage index `source` to stage index `target`."""

    source: int
    target: int
    count: int
    reason: str


Policy = Callable[[PolicyInput], list[Move]]
