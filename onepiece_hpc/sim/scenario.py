"""What is simulated: stage costs per unit class, in dispatch order, and what a move costs.

A scenario's service times are drawn once per (unit, stage) from its seed (`service_times`),
never in the order a schedule happens to run them: every policy meets the same times, and a
lower bound computed from them (sim/bound.py) holds for each simulated schedule exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STAGES = ("encode", "denoise", "decode")
GIB = 2**30


@dataclass(frozen=True)
class UnitClass:
    """`count` consecutive units that cost `seconds[s]` on one rank of stage s."""

    count: int
    seconds: tuple[float, ...]
    label: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    classes: tuple[UnitClass, ...]
    load_s: tuple[float, ...]     # loading a stage's weights into a rank (from host memory)
    fits: tuple[bool, ...] = (True, True, True)
    capacity: int = 4             # units a consumer holds in its inbound rings
    noise: float = 0.05           # service times vary by this (lognormal sigma), seeded

    @property
    def units(self) -> int:
        return sum(c.count for c in self.classes)

    def nominal_times(self) -> np.ndarray:
        """(units, stages) seconds one rank needs for each unit in each stage, without noise."""
        return np.repeat(np.array([c.seconds for c in self.classes], dtype=float).reshape(-1, len(STAGES)),
                         [c.count for c in self.classes], axis=0)

    def service_times(self, seed: int) -> np.ndarray:
        """(units, stages) seconds each unit takes in each stage: nominal times with seeded lognormal noise."""
        nominal = self.nominal_times()
        if not self.noise:
            return nominal
        return nominal * np.exp(np.random.default_rng(seed).normal(0.0, self.noise, nominal.shape))


@dataclass(frozen=True)
class StageProfile:
    """Measured costs of a model on some hardware (DESIGN.md gives H100 figures)."""

    encode_s: float               # per item
    forward_s: float              # one denoiser forward (guidance doubles the forwards)
    decode_s: float               # per item
    weights_gib: tuple[float, float, float]
    host_gbps: float = 2.0        # host-to-device copy rate when a move loads weights

    def load_seconds(self) -> tuple[float, ...]:
        return tuple(gib * GIB / (self.host_gbps * 1e9) for gib in self.weights_gib)

    def item_seconds(self, steps: int, guidance: bool) -> tuple[float, float, float]:
        forwards = steps * (2 if guidance else 1)
        return (self.encode_s, forwards * self.forward_s, self.decode_s)


#: Wan2.1-T2V-1.3B, 480x832, 81 frames, bf16, one H100 (DESIGN.md reference numbers)
WAN_1_3B_H100 = StageProfile(encode_s=0.033, forward_s=0.63, decode_s=2.07, weights_gib=(10.6, 2.6, 0.24))


def workload_shift(ranks: int, profile: StageProfile = WAN_1_3B_H100, items_per_rank: int = 30) -> Scenario:
    """The workload-shift scenario: 30 items a rank; the first half 50 steps with guidance, the second 4 without."""
    total = items_per_rank * ranks
    first = total // 2
    return Scenario(
        name="workload-shift",
        classes=(UnitClass(first, profile.item_seconds(50, True), "50 steps, guidance"),
                 UnitClass(total - first, profile.item_seconds(4, False), "4 steps, no guidance")),
        load_s=profile.load_seconds(),
    )
