"""What is simulated: a pipeline's stages (a topology, as the runtime's), stage costs per unit
class in dispatch order, and what a move costs.

A scenario's service times are drawn once per (unit, stage) from its seed (`service_times`),
never in the order a schedule happens to run them: every policy meets the same times, and a
lower bound computed from them (sim/bound.py) holds for each simulated schedule exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepiece_hpc.topology import CLASSIC, DECODE, DENOISE, ENCODE, StageDef, Topology, Work

GIB = 2**30


@dataclass(frozen=True)
class UnitClass:
    """`count` consecutive units that cost `seconds[s]` on one rank of stage s."""

    count: int
    seconds: tuple[float, ...]
    label: str = ""


@dataclass(frozen=True)
class Scenario:
    """Units in classes, each stage's load seconds, over the stages of `topology` (every tuple
    is indexed by stage, in pipeline order)."""

    name: str
    classes: tuple[UnitClass, ...]
    load_s: tuple[float, ...]     # loading a stage's weights into a rank (from host memory)
    fits: tuple[bool, ...] = ()   # whether each stage fits in a rank's memory (empty: every stage does)
    capacity: int = 4             # units a consumer holds in its inbound rings
    noise: float = 0.05           # service times vary by this (lognormal sigma), seeded
    topology: Topology = CLASSIC

    def __post_init__(self) -> None:
        n = len(self.topology)
        if not self.fits:
            object.__setattr__(self, "fits", (True,) * n)
        rows = {"load_s": self.load_s, "fits": self.fits,
                **{f"classes[{i}].seconds": c.seconds for i, c in enumerate(self.classes)}}
        wrong = [f"{name} has {len(row)}" for name, row in rows.items() if len(row) != n]
        if wrong:
            raise ValueError(f"scenario {self.name!r}: {n} stages ({self.topology.describe()}), but "
                             + "; ".join(wrong))

    @property
    def stages(self) -> tuple[str, ...]:
        return self.topology.names

    @property
    def units(self) -> int:
        return sum(c.count for c in self.classes)

    def nominal_times(self) -> np.ndarray:
        """(units, stages) seconds one rank needs for each unit in each stage, without noise."""
        return np.repeat(np.array([c.seconds for c in self.classes], dtype=float).reshape(-1, len(self.topology)),
                         [c.count for c in self.classes], axis=0)

    def service_times(self, seed: int) -> np.ndarray:
        """(units, stages) seconds each unit takes in each stage: nominal times with seeded lognormal noise."""
        nominal = self.nominal_times()
        if not self.noise:
            return nominal
        return nominal * np.exp(np.random.default_rng(seed).normal(0.0, self.noise, nominal.shape))


@dataclass(frozen=True)
class StageCost:
    """One stage's measured cost: seconds per item, or per denoiser forward (Work.FORWARDS: an
    item's forwards are its steps, twice with guidance); the weights a move loads."""

    name: str
    seconds: float
    weights_gib: float
    work: Work = Work.ITEMS
    share_of_steps: float = 1.0  # of each item's forwards, the part this stage runs (topology.StageDef)


@dataclass(frozen=True)
class StageProfile:
    """Measured costs of a pipeline's stages on some hardware (DESIGN.md gives H100 figures)."""

    stages: tuple[StageCost, ...]
    host_gbps: float = 2.0        # host-to-device copy rate when a move loads weights

    @property
    def topology(self) -> Topology:
        return Topology(tuple(StageDef(s.name, s.work, share_of_steps=s.share_of_steps) for s in self.stages))

    def load_seconds(self) -> tuple[float, ...]:
        return tuple(s.weights_gib * GIB / (self.host_gbps * 1e9) for s in self.stages)

    def item_seconds(self, steps: int, guidance: bool) -> tuple[float, ...]:
        forwards = steps * (2 if guidance else 1)
        return tuple(s.seconds * (forwards * s.share_of_steps if s.work is Work.FORWARDS else 1) for s in self.stages)


def classic_profile(encode_s: float, forward_s: float, decode_s: float, weights_gib: tuple[float, float, float],
                    host_gbps: float = 2.0) -> StageProfile:
    """encode -> denoise -> decode: seconds per item, per forward, per item; encoder, denoiser, VAE."""
    costs = (encode_s, forward_s, decode_s)
    works = (Work.ITEMS, Work.FORWARDS, Work.ITEMS)
    return StageProfile(tuple(StageCost(name, s, w, work) for name, s, w, work in
                              zip((ENCODE, DENOISE, DECODE), costs, weights_gib, works)), host_gbps)


#: Wan2.1-T2V-1.3B, 480x832, 81 frames, bf16, one H100 (DESIGN.md reference numbers)
WAN_1_3B_H100 = classic_profile(encode_s=0.033, forward_s=0.63, decode_s=2.07, weights_gib=(10.6, 2.6, 0.24))


def workload_shift(ranks: int, profile: StageProfile = WAN_1_3B_H100, items_per_rank: int = 30) -> Scenario:
    """The workload-shift scenario: 30 items a rank; the first half 50 steps with guidance, the second 4 without."""
    total = items_per_rank * ranks
    first = total // 2
    return Scenario(
        name="workload-shift",
        classes=(UnitClass(first, profile.item_seconds(50, True), "50 steps, guidance"),
                 UnitClass(total - first, profile.item_seconds(4, False), "4 steps, no guidance")),
        load_s=profile.load_seconds(), topology=profile.topology,
    )
