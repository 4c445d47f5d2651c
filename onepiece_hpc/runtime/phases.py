"""Stages in phases: when a GPU can't hold every stage's weights at once, run a group of units
through one stage, then the next, instead of each unit through every stage.

Every stage's weights wait in page-locked host memory (LoadedStage.offload); a phase copies one
stage's weights in (one DMA copy), runs the group's units through it, and gives the GPU back for
the next stage. The weights then cross once per group instead of once per unit, which is what a
plain loop with diffusers' offloading pays. The arithmetic is the same kernels on the same
tensors in the same order per unit, so the outputs are bit-identical to running each unit
through every stage (tests/test_phases.py).

A unit whose stage raises is reported with that stage and dropped from the later ones; the rest
of the group goes on (a unit's failure is the unit's, as in the one-process run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from onepiece_hpc.models.base import StageRunner, UnitInput
from onepiece_hpc.runtime.failures import describe


@dataclass
class UnitOutcome:
    """One unit of a group: its last stage's tensors and each stage's seconds, or where it failed."""

    request: UnitInput
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    failed_stage: str | None = None
    error: str = ""  # described, not kept: an exception's frames would hold the unit's tensors

    @property
    def ok(self) -> bool:
        return self.failed_stage is None


@dataclass
class PhaseTimes:
    """Seconds spent moving weights in (restore) and out (offload), over a run."""

    restore_s: float = 0.0
    offload_s: float = 0.0


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def load_offloaded(stages: Sequence[str], load: Callable[[str], StageRunner]) -> dict[str, StageRunner]:
    """Every stage loaded one after the other, each offloaded before the next comes in: the GPU
    never holds more than one stage's weights."""
    runners = {}
    for stage in stages:
        runners[stage] = load(stage)
        runners[stage].offload()
    return runners


def run_phase(requests: Sequence[UnitInput], runners: dict[str, StageRunner], device: torch.device,
              times: PhaseTimes | None = None, move_weights: bool = True) -> list[UnitOutcome]:
    """The group `requests` through every stage of `runners` (in their order), one stage at a time,
    each stage's weights brought in before its turn and sent back after it (with `move_weights`
    False the weights stay where they are: every stage resident, a group of one is the plain
    unit-by-unit run)."""
    outcomes = [UnitOutcome(request) for request in requests]
    times = times if times is not None else PhaseTimes()
    for stage, runner in runners.items():
        alive = [o for o in outcomes if o.ok]
        if not alive:
            break
        if move_weights:
            t0 = _now(device)
            runner.restore()
            times.restore_s += _now(device) - t0
        for outcome in alive:
            t1 = time.perf_counter()
            try:
                outcome.tensors = runner(outcome.request, outcome.tensors)
            except Exception as err:  # the unit's failure; Ctrl-C and SIGTERM still stop the run
                outcome.failed_stage, outcome.error, outcome.tensors = stage, describe(err), {}
                if device.type == "cuda":
                    torch.cuda.empty_cache()  # an out-of-memory's blocks go back before the next unit
                continue
            outcome.seconds.append(_now(device) - t1)
        if move_weights:
            t2 = _now(device)
            runner.offload()
            times.offload_s += _now(device) - t2
    return outcomes
