"""Every unit's state at rank 0, and the order in which the planned ones are dispatched.

Invariant: a unit is dispatched at most once a run and ends committed or failed, never both;
every change goes through the transition table (runtime/states.py), so a second commit of a
unit, or the commit of one never granted, stops the run naming the unit and both states. One
byte a unit and an index array in dispatch order: 10^7 units cost about 90 MB here, not 10^7
Python objects; the units in flight (a few per rank) are also kept as a set for the policy.
"""

from __future__ import annotations

import numpy as np

from onepiece_hpc.runtime.states import UNIT_TRANSITIONS, UnitState, advance


class UnitBook:
    """States of units 0..count-1; `planned` (int64, dispatch order) start PLANNED, the rest SKIPPED."""

    def __init__(self, count: int, planned: np.ndarray) -> None:
        self._state = np.full(count, UnitState.SKIPPED, dtype=np.int8)
        self._state[planned] = UnitState.PLANNED
        self._order = planned
        self._next = 0
        self._in_flight: set[int] = set()

    def state(self, unit: int) -> UnitState:
        return UnitState(int(self._state[unit]))

    @property
    def planned(self) -> int:
        """Units not yet dispatched."""
        return len(self._order) - self._next

    @property
    def in_flight(self) -> int:
        """Units dispatched and neither committed nor failed."""
        return len(self._in_flight)

    @property
    def unfinished(self) -> bool:
        return bool(self.planned or self._in_flight)

    def undispatched(self) -> np.ndarray:
        """The planned units, in dispatch order."""
        return self._order[self._next:]

    def flying(self) -> np.ndarray:
        """The units in flight, in unit order."""
        return np.array(sorted(self._in_flight), dtype=np.int64)

    def dispatch(self) -> int:
        """The next planned unit, now DISPATCHED (the caller checked `planned`)."""
        unit = int(self._order[self._next])
        self._move(unit, UnitState.DISPATCHED)
        self._next += 1
        self._in_flight.add(unit)
        return unit

    def commit(self, unit: int) -> None:
        self._move(unit, UnitState.COMMITTED)
        self._in_flight.discard(unit)

    def fail(self, unit: int) -> None:
        self._move(unit, UnitState.FAILED)
        self._in_flight.discard(unit)

    def _move(self, unit: int, after: UnitState) -> None:
        self._state[unit] = advance(UNIT_TRANSITIONS, f"unit {unit}", self.state(unit), after)
