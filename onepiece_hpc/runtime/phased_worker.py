"""A stage rank of a run in phases: it holds its GPU only in its turns (runtime/manager/turns.py).

Between turns its stage's weights wait in page-locked host memory, and its ring holds what the
stage before it passed. A turn: the weights in, the turn's units (a first stage asks rank 0 for
up to that many, one at a time; a later stage runs that many from its ring), the weights out,
TurnDone. Its first turn loads the stage (and warms it up) and runs nothing. A rank sends its
outputs to the next stage's rank of its own chain (the last stage's go to rank 0), so a chain's
units never leave its GPU.

The outputs are the bits of any other placement: each unit goes through the same stage calls,
only in another order (tests/test_staged_phases.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from onepiece_hpc.planning.layout import NODE_MANAGER
from onepiece_hpc.runtime.control import TAG_TO_MANAGER
from onepiece_hpc.runtime.messages import PhaseTurn, TurnDone, WorkRequest
from onepiece_hpc.runtime.states import Supply
from onepiece_hpc.runtime.worker import StageWorker


class PhasedStageWorker(StageWorker):
    """The main loop of a stage rank that takes turns on its GPU with the other ranks of `chain`."""

    def __init__(self, *args, chain: tuple[int, ...], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.chain = chain
        position = chain.index(self.me.rank)
        self._next_rank = chain[position + 1] if position + 1 < len(chain) else NODE_MANAGER
        self._previous_rank = chain[position - 1] if position else NODE_MANAGER

    # -- turns -------------------------------------------------------------------------------
    def _load(self) -> None:
        """The first turn: load the stage (and warm it up), then give the GPU back."""
        turn = self._await_turn()
        if turn is None:  # the run ended before this rank's turn came (nothing left to run)
            return
        super()._load()
        self.counters.load_s += self.runners.rest(self.stage)  # the host copy is made once, here: loading
        self._turn_done(0, 0, 0.0)

    def _work(self) -> bool:
        if not self.turns:
            return False
        self._take_turn(self.turns.popleft())
        return True

    def _take_turn(self, turn: PhaseTurn) -> None:
        weights_s = self.runners.load(self.stage)
        passed = failed = 0
        units = self._granted_units(turn.units) if self.stage == self.topology.first else self._ring_units(turn.units)
        for ok in units:
            passed, failed = passed + ok, failed + (not ok)
        weights_s += self.runners.rest(self.stage)
        self.counters.weights_s += weights_s
        self._turn_done(passed, failed, weights_s)

    def _turn_done(self, passed: int, failed: int, weights_s: float) -> None:
        self.control.send(NODE_MANAGER, TurnDone(self.me.rank, passed, failed, weights_s), TAG_TO_MANAGER)

    def _await_turn(self) -> PhaseTurn | None:
        """The next turn rank 0 gives this rank; None once it says the run is over."""
        pause = self.policy.first_sleep_s
        while not self.turns:
            if self.shutdown:
                return None
            if not self._handle_control():
                self._check_manager("its turn on the GPU")
                time.sleep(pause)
                pause = min(pause * 2, self.policy.max_sleep_s)
        return self.turns.popleft()

    # -- a turn's units --------------------------------------------------------------------------
    def _granted_units(self, count: int) -> Iterator[bool]:
        """Up to `count` units asked of rank 0 one at a time and run (fewer once none is left)."""
        for _ in range(count):
            if not self.supply.may_ask:
                return
            self.control.send(NODE_MANAGER, WorkRequest(self.me.rank), TAG_TO_MANAGER)
            self.supply.asked()
            self._wait("a work grant from rank 0", lambda: self.supply.state is Supply.GRANTED)
            grant = self.supply.take()
            if grant.unit < 0:
                return
            yield self._run_unit(self._granted(grant), {}, [])

    def _ring_units(self, count: int) -> Iterator[bool]:
        """The `count` units the stage before passed this rank, from its ring, run in turn."""
        done = 0
        while done < count:
            found = self._wait(f"unit {done + 1} of the {count} its turn was given, from rank {self._previous_rank}",
                               self._receive_any)
            ok = self._serve_message(*found)
            if ok is not None:  # a fence carries no unit
                done += 1
                yield ok

    def _wait(self, what: str, ready):
        """`ready()`'s first true value, listening to rank 0 meanwhile; within the wait deadline."""
        started = time.monotonic()
        pause = self.policy.first_sleep_s
        while not (found := ready()):
            if time.monotonic() - started > self.policy.timeout_s:
                raise TimeoutError(f"rank {self.me.rank} ({self.stage}) waited {self.policy.timeout_s:.0f} s "
                                   f"in its turn for {what}")
            if not self._handle_control():
                self._check_manager(what)
                time.sleep(pause)
                pause = min(pause * 2, self.policy.max_sleep_s)
        self.counters.wait_s += time.monotonic() - started
        return found

    # -- routes ------------------------------------------------------------------------------
    def _downstream(self) -> list[int]:
        return [self._next_rank]
