"""Static-best (searched), adaptive and oracle on one scenario: the figures `onepiece simulate` prints."""

from __future__ import annotations

import numpy as np

from onepiece_hpc.runtime.policy import PolicySettings, make_policy
from onepiece_hpc.runtime.policy.adaptive import oracle
from onepiece_hpc.runtime.policy.splits import balanced_split
from onepiece_hpc.sim.engine import SimResult, Simulation
from onepiece_hpc.sim.scenario import Scenario


def fluid_makespans(scenario: Scenario, ranks: int, encode: int) -> tuple[np.ndarray, np.ndarray]:
    """Estimated makespan of every static split with `encode` encode ranks: (denoise counts, seconds)."""
    denoise = np.arange(1, ranks - encode)
    decode = ranks - encode - denoise
    total = np.zeros(len(denoise))
    for c in scenario.classes:
        per_unit = np.maximum.reduce([np.full(len(denoise), c.seconds[0] / encode),
                                      c.seconds[1] / denoise, c.seconds[2] / decode])
        total += c.count * per_unit
    return denoise, total


def static_candidates(scenario: Scenario, ranks: int, keep: int = 3) -> list[tuple[int, int, int]]:
    """The `keep` best static splits by the fluid estimate, searched over every split."""
    found = []
    for encode in range(1, max(2, ranks // 16) + 1):
        if ranks - encode < 2:
            break
        denoise, seconds = fluid_makespans(scenario, ranks, encode)
        for i in np.argsort(seconds)[:keep]:
            found.append((float(seconds[i]), (encode, int(denoise[i]), ranks - encode - int(denoise[i]))))
    found.sort()
    return [split for _, split in found[:keep]]


def start_split(scenario: Scenario, ranks: int) -> tuple[int, ...]:
    """Where adaptive and oracle start: balanced on the first units' costs."""
    first = scenario.classes[0].seconds
    return tuple(balanced_split(first, ranks, [scenario.units] * 3, scenario.fits))


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
