"""The reference path: every stage in one process, no MPI, committed to the job's HDF5 output."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from onepiece_hpc.models.base import UnitInput
from onepiece_hpc.runtime.interrupts import Terminated
from onepiece_hpc.runtime.prepare import Prepared
from onepiece_hpc.runtime.progress import ProgressReporter
from onepiece_hpc.spec.job import Stage
from onepiece_hpc.spec.plan import Plan, Unit
from onepiece_hpc.store.items import PlanItems
from onepiece_hpc.store.output import OutputWriter
from onepiece_hpc.store.schema import TIMING_STAGES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    output: str
    items_total: int
    items_done: int
    committed_now: int
    seconds: float
    stage_seconds: dict[str, float]  # summed over this run's units


def unit_input(plan: Plan, unit: Unit) -> UnitInput:
    items = plan.unit_items(unit)
    return UnitInput(
        unit=unit.index,
        items=tuple(i.index for i in items),
        prompts=tuple(i.prompt for i in items),
        negative_prompts=tuple(i.negative_prompt for i in items),
        seeds=tuple(i.seed for i in items),
        params=items[0].params,
    )


def run_monolithic(prepared: Prepared,
                   progress: Callable[[int, int], ProgressReporter] | None = None) -> RunSummary:
    """Run every unit not yet done through encode -> denoise -> decode and commit it."""
    plan, adapter, placement = prepared.plan, prepared.model.adapter, prepared.placement
    if placement.device.type == "cpu":
        torch.set_num_threads(prepared.job.cpu_threads)
    writer = OutputWriter.open(prepared.output, PlanItems(plan), prepared.layout, prepared.provenance, mode="monolithic",
                               settings=prepared.store, run=prepared.run_info("monolithic"))
    status = "failed"
    spent = dict.fromkeys(TIMING_STAGES, 0.0)
    started = time.monotonic()
    try:
        done = writer.done_mask()
        pending = [u for u in plan.units if not done[u.start:u.stop].all()]
        log.info("%d of %d units to run", len(pending), len(plan.units))
        runners = {stage: adapter.load(stage, placement) for stage in Stage} if pending else {}
        with progress(len(plan.items), int(done.sum())) if progress else nullcontext() as reporter:
            for unit in pending:
                _run_unit(plan, unit, runners, writer, prepared.layout.dataset, spent, reporter)
        status = "completed"
    except KeyboardInterrupt as stop:
        status = "terminated" if isinstance(stop, Terminated) else "interrupted"
        raise
    finally:
        writer.close(status)
    final = writer.committed_this_run + int(done.sum())
    return RunSummary(output=str(prepared.output), items_total=len(plan.items), items_done=final,
                      committed_now=writer.committed_this_run, seconds=time.monotonic() - started,
                      stage_seconds=spent)


def _run_unit(plan: Plan, unit: Unit, runners: dict, writer: OutputWriter, output: str, spent: dict[str, float],
              reporter: ProgressReporter | None) -> None:
    request = unit_input(plan, unit)
    tensors: dict[str, torch.Tensor] = {}
    seconds = []
    for stage in Stage:
        t0 = time.perf_counter()
        tensors = runners[stage](request, tensors)
        seconds.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    per_item = np.array(seconds) / unit.size
    count = writer.commit(unit.start, tensors[output].numpy(), np.tile(per_item, (unit.size, 1)))
    seconds.append(time.perf_counter() - t0)
    for name, value in zip(TIMING_STAGES, seconds):
        spent[name] += value
    if reporter:
        reporter.advance(count)
