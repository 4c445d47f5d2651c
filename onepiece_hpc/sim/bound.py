"""A lower bound on the makespan of a scenario: no schedule on `ranks` ranks can finish sooner.

Invariant: `makespan_bound(times, ranks).seconds` <= the makespan of every schedule that runs
the units whose per-stage service times are `times` on `ranks` ranks, whatever its policy, its
start split, its moves or its routing. The simulator draws `times` per (unit, stage) before it
runs (Scenario.service_times), so the bound holds for each simulated run exactly, not on average.

What any schedule must respect (and the simulator does): a rank runs one unit at a time; a unit's
stage s starts after its stage s-1 has ended, and takes times[u, s] on whichever rank runs it;
work starts at time 0. Everything else is relaxed: moves are free and instant, a rank may run
any stage, memory limits (`fits`) are ignored, rings are unbounded. Relaxing constraints can only
lower the best makespan, so a bound of the relaxed problem bounds the real one.

Why each part is a bound, for a schedule of makespan T on R ranks with U units:
- chain: unit u's stages run one after another inside [0, T], so T >= sum_s times[u, s].
- fluid: at most min(R, U) operations run at once (one per rank, and one per unit since a
  unit's stages are sequential), and all the work lies in [0, T], so total work <= min(R, U) * T.
  This is the fluid relaxation: free, instant moves, every rank on whatever work is left.
The bound is the larger of the two: each holds, so their maximum does.

Pipeline fill and drain add nothing here: a window bound (all the work of stages a..b lies in
[min head_a, T - min tail_b]) is never above the fluid bound, because the work outside the
window is at least U * (min head_a + min tail_b) >= min(R, U) * (min head_a + min tail_b). The
real fill and drain cost (a burst of outputs meeting few consumers, ranks that can't move until
they have drained) comes from constraints the relaxation drops, and shows as the gap to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bound:
    seconds: float   # the bound: the larger part
    fluid_s: float   # total work over min(ranks, units): free, instant moves
    chain_s: float   # the longest unit, all its stages one after another
    binding: str     # which part gives `seconds`: "fluid" or "chain"


def makespan_bound(times: np.ndarray, ranks: int) -> Bound:
    """The lower bound for units with (units, stages) service seconds `times` on `ranks` ranks."""
    if ranks < 1:
        raise ValueError(f"ranks must be at least 1, got {ranks}")
    times = np.asarray(times, dtype=float)
    if times.size == 0:
        return Bound(0.0, 0.0, 0.0, "no units")
    fluid = float(times.sum() / min(ranks, len(times)))
    chain = float(times.sum(axis=1).max())
    return Bound(seconds=max(fluid, chain), fluid_s=fluid, chain_s=chain, binding="fluid" if fluid >= chain else "chain")
