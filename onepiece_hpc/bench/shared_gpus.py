"""A static staged layout on a node of shared GPUs, simulated unit by unit: how long a batch takes,
fill and drain included, and how busy its GPUs are.

The layout model (bench/gpu_layout.py) says where the steady state's bottleneck is; this says
what a finite batch costs. It mirrors the staged runtime as placed on GPUs: stage ranks take the
node's GPUs in turn, in stage order (runtime/gpus.py `gpu_index`); a first-stage rank pulls units
from the Node Manager; a rank holds at most `slots` units (the one it works on included, as its
inbound ring does) and hands its output to the next stage's rank with the most free slots, or
waits holding it; the last stage's output is done. Ranks busy on one GPU share it evenly, as
time-sliced kernels of several processes do. Transfers, context switches and rank 0's own work
are left out, so the figures are lower bounds of what a run can reach. Pure: no torch, no MPI.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from onepiece_hpc.runtime.gpus import gpu_index

SLOTS = 2  # a rank's inbound ring: the unit it works on and one waiting (the runtime's default)


@dataclass(frozen=True)
class BatchRun:
    """What a batch took: the window from the first grant to the last output."""

    layout: tuple[int, ...]
    gpus: int
    units: int
    window_s: float
    busy_gpu_s: float

    @property
    def gpu_s_per_unit(self) -> float:
        return self.gpus * self.window_s / self.units if self.units else 0.0

    @property
    def efficiency(self) -> float:
        """Busy over allocated GPU-seconds, fill and drain included."""
        return self.busy_gpu_s / (self.gpus * self.window_s) if self.window_s else 0.0


def data_parallel(seconds: Sequence[float], gpus: int, units: int) -> BatchRun:
    """Every GPU runs whole units, one after another, with its share of the batch."""
    floor = sum(seconds)
    most = -(-units // gpus)
    return BatchRun((), gpus, units, most * floor, units * floor)


def simulate_batch(layout: Sequence[int], seconds: Sequence[float], gpus: int, units: int,
                   slots: int = SLOTS) -> BatchRun:
    """Run `units` units through `layout` (ranks a stage, in order) on `gpus` GPUs, where a unit
    takes `seconds[s]` of a whole GPU at stage s. Ranks busy on one GPU share it evenly (k of them
    each run at 1/k speed), as time-sliced kernels of several processes do."""
    if len(layout) != len(seconds) or min(layout) < 1:
        raise ValueError(f"layout {tuple(layout)} for {len(seconds)} stages: one rank at least a stage")
    stage_of = [s for s, count in enumerate(layout) for _ in range(count)]
    ranks_of = [[r for r, s in enumerate(stage_of) if s == stage] for stage in range(len(layout))]
    gpu_of = [gpu_index(r + 1, holds_manager=True, gpus=gpus) for r in range(len(stage_of))]  # rank 0 holds none
    last = len(layout) - 1
    last_stage_first = sorted(range(len(stage_of)), key=lambda r: -stage_of[r])
    held = [0] * len(stage_of)            # units in a rank's ring, the one it works on included
    ready = [0] * len(stage_of)           # of those, units it has not started
    outbox = [False] * len(stage_of)      # a finished unit waiting for a slot downstream
    active: list[dict[int, float]] = [{} for _ in range(gpus)]  # rank -> GPU-seconds of its unit left
    since = [0.0] * gpus
    version = [0] * gpus
    events: list[tuple[float, int, int]] = []  # (time, version, gpu)
    clock = {"now": 0.0, "granted": 0, "done": 0}

    def advance(g: int) -> None:
        if active[g]:
            share = (clock["now"] - since[g]) / len(active[g])
            for r in active[g]:
                active[g][r] -= share
        since[g] = clock["now"]

    def schedule(g: int) -> None:
        version[g] += 1
        if active[g]:
            heapq.heappush(events, (clock["now"] + min(active[g].values()) * len(active[g]), version[g], g))

    def start(r: int) -> None:
        g = gpu_of[r]
        if ready[r] and not outbox[r] and r not in active[g]:
            advance(g)
            ready[r] -= 1
            active[g][r] = seconds[stage_of[r]]
            schedule(g)

    def pull() -> None:
        """First-stage ranks take units while the batch has some and their rings have room."""
        for r in sorted(ranks_of[0], key=lambda r: held[r]):
            while clock["granted"] < units and held[r] < slots:
                held[r], ready[r] = held[r] + 1, ready[r] + 1
                clock["granted"] += 1
                start(r)

    def hand_on(r: int) -> bool:
        """The finished unit of rank r to the next stage (the rank with the most room), or done."""
        if stage_of[r] == last:
            clock["done"] += 1
        else:
            target = min(ranks_of[stage_of[r] + 1], key=lambda t: held[t])
            if held[target] >= slots:
                return False
            held[target], ready[target] = held[target] + 1, ready[target] + 1
            start(target)
        held[r] -= 1
        outbox[r] = False
        return True

    def unblock() -> None:
        """Outputs that waited for a slot go on, from the last stage back (each frees one above)."""
        moved = True
        while moved:
            moved = False
            for r in last_stage_first:
                if outbox[r] and hand_on(r):
                    moved = True
                    start(r)

    pull()
    while events:
        clock["now"], seen, g = heapq.heappop(events)
        if seen != version[g]:
            continue  # the GPU's ranks changed since: a later event stands for it
        advance(g)
        finished = [r for r, left in active[g].items() if left <= 1e-9]
        for r in finished:
            del active[g][r]
            outbox[r] = True
        schedule(g)
        unblock()
        pull()
        for r in finished:
            start(r)
    if clock["done"] != units:
        raise RuntimeError(f"the simulated batch ended with {clock['done']} of {units} units done")
    return BatchRun(tuple(layout), gpus, units, clock["now"], units * sum(seconds))
