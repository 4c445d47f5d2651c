"""Static-best (searched), adaptive and oracle on one scenario: the figures `onepiece simulate` prints.

Static-best is the best fixed split for the whole batch: splits are searched with a fluid
estimate of their makespan (each unit class takes as long as its slowest stage's share of it),
and the few best are simulated. The search is a descent over one or two transfers of ranks
between stages at a time, with steps halving from a quarter of the ranks to one, from the split
balanced on the batch's total work per stage and from those balanced on its heaviest unit
classes: any number of stages, each round's neighbours estimated at once.
"""

from __future__ import annotations

import numpy as np

from onepiece_hpc.runtime.policy import PolicySettings, make_policy
from onepiece_hpc.runtime.policy.adaptive import oracle
from onepiece_hpc.runtime.policy.splits import balanced_split
from onepiece_hpc.sim.engine import SimResult, Simulation
from onepiece_hpc.sim.scenario import Scenario

STARTS = 4  # descents: from the split balanced on the whole batch's work, and on each of its heaviest classes


def fluid_makespans(scenario: Scenario, splits: np.ndarray) -> np.ndarray:
    """Estimated makespan of each static split (a row of `splits`): per unit class, its count
    times its slowest stage's seconds per unit over that stage's ranks."""
    seconds = np.array([c.seconds for c in scenario.classes], dtype=float)
    counts = np.array([c.count for c in scenario.classes], dtype=float)
    per_unit = (seconds[None, :, :] / np.asarray(splits, dtype=float)[:, None, :]).max(axis=2)
    return per_unit @ counts


def _with_one_each(split: list[int], ranks: int) -> np.ndarray:
    """`split` with at least one rank a stage (a stage without ranks would hold every unit up),
    the ranks that takes coming from the largest stages."""
    split = [max(1, n) for n in split]
    while sum(split) > ranks:
        split[split.index(max(split))] -= 1
    split[split.index(max(split))] += ranks - sum(split)
    return np.array(split, dtype=np.int64)


def _transfers(stages: int) -> np.ndarray:
    """Every change of a split by one or two transfers of a rank between stages (rows sum to 0):
    two at once cross the ridges where two stages bind together, which one transfer can't."""
    one = []
    for source in range(stages):
        for target in range(stages):
            if source != target:
                row = np.zeros(stages, dtype=np.int64)
                row[source], row[target] = -1, 1
                one.append(row)
    rows = {tuple(r) for r in one}
    rows |= {tuple(a + b) for i, a in enumerate(one) for b in one[i + 1:] if (a + b).any()}
    return np.array(sorted(rows), dtype=np.int64)


def _descend(scenario: Scenario, current: np.ndarray, transfers: np.ndarray, seen: dict) -> None:
    """Descend from `current` to a split no neighbour improves on, noting every estimate in `seen`."""
    seen[tuple(current.tolist())] = float(fluid_makespans(scenario, current[None])[0])
    step = max(1, int(current.sum()) // 4)
    while True:
        near = current[None, :] + step * transfers
        near = near[(near >= 1).all(axis=1)]
        estimates = fluid_makespans(scenario, near)
        for split, seconds in zip(map(tuple, near.tolist()), estimates.tolist()):
            seen[split] = seconds
        best = int(np.argmin(estimates)) if len(near) else -1
        if best >= 0 and estimates[best] < seen[tuple(current.tolist())] * (1 - 1e-12):
            current = near[best]
        elif step == 1:
            return
        else:
            step = max(1, step // 2)


def static_candidates(scenario: Scenario, ranks: int, keep: int = 3) -> list[tuple[int, ...]]:
    """The `keep` best static splits by the fluid estimate (see the module's docstring)."""
    stages = len(scenario.topology)
    if ranks < stages:
        raise ValueError(f"{ranks} ranks can't serve {stages} stages ({scenario.topology.describe()})")
    work = [sum(c.count * c.seconds[i] for c in scenario.classes) for i in range(stages)]
    heaviest = sorted(scenario.classes, key=lambda c: -c.count * sum(c.seconds))[:STARTS - 1]
    seen: dict[tuple[int, ...], float] = {}
    transfers = _transfers(stages)
    for costs in (work, *(c.seconds for c in heaviest)):
        _descend(scenario, _with_one_each(balanced_split(costs, ranks, [ranks] * stages, [True] * stages), ranks),
                 transfers, seen)
    return sorted(seen, key=lambda split: (seen[split], split))[:keep]


def start_split(scenario: Scenario, ranks: int) -> tuple[int, ...]:
    """Where adaptive and oracle start: balanced on the first units' costs."""
    first = scenario.classes[0].seconds
    stages = len(scenario.topology)
    return tuple(balanced_split(first, ranks, [scenario.units] * stages, scenario.fits))


def compare(scenario: Scenario, ranks: int, settings: PolicySettings, seed: int = 0) -> list[SimResult]:
    """One result each for static-best, adaptive and oracle, same scenario and seed."""
    statics = [Simulation(scenario, split, None, "static-best", seed=seed).run()
               for split in static_candidates(scenario, ranks)]
    best = min(statics, key=lambda r: r.makespan_s)
    start = start_split(scenario, ranks)
    adaptive = Simulation(scenario, start, make_policy(settings), "adaptive", interval_s=settings.interval_s,
                          cooldown_s=settings.cooldown_s, seed=seed).run()
    best_oracle = Simulation(scenario, start, oracle, "oracle", interval_s=settings.interval_s, cooldown_s=0.0,
                             seed=seed).run()
    return [best, adaptive, best_oracle]
