"""Phases at rank 0: the ranks of a GPU take turns on it (a staged run with --phases K).

A chain is one rank of every stage on one GPU (StageLayout.chains). One rank of a chain holds
its GPU at a time: it brings its stage's weights in from page-locked host memory, runs its turn's
units, sends the weights back and says how many units it passed on (TurnDone). A first stage's
turn is up to K units of new work; a later stage's is what the stage before it passed and it has
not run yet. Every rank's first turn loads its stage (and warms it up) and runs nothing, so a
chain's ranks load one after the other and the GPU never holds two stages' weights.

The next turn goes to the first rank after the last holder, in the pipeline's order and round
again, that has work: so a group of K units goes through encode, then denoise, then decode, and
the weights cross once per group instead of once per unit.

Invariant: at most one rank of a chain holds a turn; a turn is given only with work in it (or to
load); a later stage is asked for exactly the units its upstream passed it and it has not run,
which its ring holds (its slots are sized for a whole turn).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from onepiece_hpc.runtime.messages import PhaseTurn, TurnDone

log = logging.getLogger(__name__)


class TurnError(RuntimeError):
    """A TurnDone from a rank that held no turn (a bug, or ranks of different versions)."""


@dataclass
class Chain:
    """One GPU's ranks, in the pipeline's order, and whose turn it is."""

    ranks: tuple[int, ...]
    holder: int | None = None
    loaded: int = 0    # ranks (from the first) that have had their load turn
    last: int = -1     # position of the last holder
    waiting: list[int] = field(default_factory=list)  # units passed to each position, not yet run

    def __post_init__(self) -> None:
        self.waiting = [0] * len(self.ranks)


@dataclass
class TurnTotals:
    turns: int = 0
    weights_s: float = 0.0  # moving weights in and out, summed over every turn


class PhaseTurns:
    """Whose turn it is on each chain; `send(rank, message)` reaches a stage rank."""

    def __init__(self, chains: tuple[tuple[int, ...], ...], phase: int, send: Callable[[int, object], None]) -> None:
        self.phase, self.send = phase, send
        self.chains = [Chain(tuple(ranks)) for ranks in chains]
        self._chain_of = {rank: chain for chain in self.chains for rank in chain.ranks}
        self.totals = TurnTotals()

    def done(self, message: TurnDone) -> None:
        """A rank's turn is over: what it passed waits for the next stage of its chain."""
        chain = self._chain_of.get(message.rank)
        if chain is None or chain.holder != message.rank:
            raise TurnError(f"rank {message.rank} ended a turn it did not hold")
        position = chain.ranks.index(message.rank)
        chain.holder, chain.last = None, position
        if position + 1 < len(chain.ranks):
            chain.waiting[position + 1] += message.passed
        self.totals.turns += 1
        self.totals.weights_s += message.weights_s

    def give(self, new_work: bool) -> None:
        """Give each idle chain's GPU to its next rank with work (`new_work`: units are left for a
        first stage to ask for)."""
        for chain in self.chains:
            if chain.holder is None:
                self._next(chain, new_work)

    def _next(self, chain: Chain, new_work: bool) -> None:
        if chain.loaded < len(chain.ranks):
            self._grant(chain, chain.loaded, 0)
            chain.loaded += 1
            return
        count = len(chain.ranks)
        for step in range(1, count + 1):
            position = (chain.last + step) % count
            units = (self.phase if new_work else 0) if position == 0 else chain.waiting[position]
            if units:
                chain.waiting[position] = 0
                self._grant(chain, position, units)
                return

    def _grant(self, chain: Chain, position: int, units: int) -> None:
        chain.holder = chain.ranks[position]
        self.send(chain.holder, PhaseTurn(units))
