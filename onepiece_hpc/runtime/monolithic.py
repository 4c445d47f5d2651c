"""The reference path: every stage in one process, no MPI, committed to the job's HDF5 output.

With `phase` (units a phase), the stages run in phases (runtime/phases.py): only one stage's
weights on the GPU at a time, the rest in page-locked host memory, for GPUs whose memory can't
hold the whole pipeline; the outputs are the same bits.

A unit that raises while generated is recorded as failed and the run goes on; errors from
loading the model or from the output are the job's and stop it, and so does a stage that fails
unit after unit (runtime/failures.py says when).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from onepiece_hpc.models.base import UnitInput
from onepiece_hpc.runtime.failures import MONOLITHIC, FailureBudget, UnitFailure
from onepiece_hpc.runtime.interrupts import Terminated
from onepiece_hpc.runtime.phases import load_offloaded, run_phase
from onepiece_hpc.runtime.prepare import Prepared
from onepiece_hpc.runtime.progress import ProgressReporter
from onepiece_hpc.planning.plan import Plan, Unit
from onepiece_hpc.planning.work import WorkMeter
from onepiece_hpc.store.items import PlanItems
from onepiece_hpc.store.journal import FailedUnit
from onepiece_hpc.store.output import OutputWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    output: str
    items_total: int
    items_done: int
    committed_now: int
    seconds: float
    stage_seconds: dict[str, float]  # summed over this run's units
    items_failed: int = 0             # items failed and not done, after this run
    failed_now: int = 0               # of them, those this run recorded
    failures: tuple[FailedUnit, ...] = ()  # their units' records, in item order


def unit_input(plan: Plan, unit: Unit) -> UnitInput:
    t = plan.table
    return UnitInput(
        unit=unit.index,
        items=tuple(range(unit.start, unit.stop)),
        prompts=tuple(t.prompts.rows(unit.start, unit.stop)),
        negative_prompts=tuple(t.negatives.rows(unit.start, unit.stop)),
        seeds=tuple(t.seeds[unit.start:unit.stop].tolist()),
        params=plan.unit_params(unit),
    )


def run_monolithic(prepared: Prepared, progress: Callable[[WorkMeter], ProgressReporter] | None = None,
                   retry_failed: bool = False, phase: int | None = None) -> RunSummary:
    """Run every unit neither done nor failed (with `retry_failed`: every failed unit) through
    every stage of the model's topology and commit it; raises StageFailed when the stage itself fails.
    With `phase`, groups of that many units go through the stages one stage at a time."""
    plan, adapter, placement = prepared.plan, prepared.model.adapter, prepared.placement
    if placement.device_type == "cpu":
        torch.set_num_threads(prepared.job.cpu_threads)
    writer = OutputWriter.open(prepared.output, PlanItems(plan), prepared.layout, prepared.provenance, mode="monolithic",
                               settings=prepared.store, run=prepared.run_info("monolithic"))
    status = "failed"
    spent = dict.fromkeys(adapter.topology.timing_columns, 0.0)
    started = time.monotonic()
    try:
        done, wanted, failed_before = writer.done_mask(), writer.pending_mask(retry_failed), writer.failed_mask()
        pending = plan.pending_units(~wanted)  # unit indices, not Unit objects: 10^7 of them cost 80 MB
        log.info("%d of %d units to run", len(pending), plan.unit_count)
        load = lambda stage: adapter.load(stage, placement)  # noqa: E731
        stages = adapter.topology.names
        runners = ((load_offloaded(stages, load) if phase else {stage: load(stage) for stage in stages})
                   if len(pending) else {})
        budget = FailureBudget()
        failed_units = 0
        meter = WorkMeter(len(plan.items), plan.work_of(), len(plan.items) - int(wanted.sum()), plan.work_of(~wanted))
        with progress(meter) if progress else nullcontext() as reporter:
            indices = pending.tolist()
            for first in range(0, len(indices), phase or 1):
                group = [plan.unit(index) for index in indices[first:first + (phase or 1)]]
                outcomes = run_phase([unit_input(plan, unit) for unit in group], runners, placement.device,
                                     move_weights=bool(phase))
                for unit, outcome in zip(group, outcomes):
                    if not outcome.ok:
                        failure = UnitFailure(unit.index, unit.start, unit.stop, outcome.failed_stage, MONOLITHIC,
                                              outcome.error)
                        log.warning("%s failed: %s", failure.where, failure.error)
                        budget.failed(failure, again=bool(failed_before[unit.start:unit.stop].any()))
                        failed_units += 1
                        _advance(meter, reporter, plan, unit, int(wanted[unit.start:unit.stop].sum()))
                        if reporter:
                            reporter.note(f"{failed_units} unit(s) failed")
                        continue
                    outputs = {name: outcome.tensors[name].numpy() for name in prepared.layout.tensors}
                    count = _commit(unit, outputs, outcome.seconds, writer, spent)
                    _advance(meter, reporter, plan, unit, count)
                    _record(writer, budget.succeeded())
            _record(writer, budget.finish())
        status = "completed"
    except KeyboardInterrupt as stop:
        status = "terminated" if isinstance(stop, Terminated) else "interrupted"
        raise
    finally:
        writer.close(status)
    final = writer.committed_this_run + int(done.sum())
    return RunSummary(output=str(prepared.output), items_total=len(plan.items), items_done=final,
                      committed_now=writer.committed_this_run, seconds=time.monotonic() - started,
                      stage_seconds=spent, items_failed=int(writer.failed_mask().sum()),
                      failed_now=writer.failed_this_run, failures=tuple(writer.failures()))


def _commit(unit: Unit, outputs: dict[str, np.ndarray], seconds: list[float], writer: OutputWriter,
            spent: dict[str, float]) -> int:
    t0 = time.perf_counter()
    per_item = np.array(seconds) / unit.size
    count = writer.commit(unit.start, outputs, np.tile(per_item, (unit.size, 1)))
    seconds.append(time.perf_counter() - t0)
    for name, value in zip(spent, seconds):
        spent[name] += value
    return count


def _advance(meter: WorkMeter, reporter: ProgressReporter | None, plan, unit: Unit, items: int) -> None:
    """`items` of `unit` are done (committed, or failed this run)."""
    meter.add(items, plan.unit_work(unit) * items / unit.size)
    if reporter:
        reporter.refresh()


def _record(writer: OutputWriter, failures: list[UnitFailure]) -> None:
    """Failures the budget judged to be the units' own go into the output."""
    for failure in failures:
        writer.record_failed(failure.start, failure.stop, failure.stage, failure.rank, failure.error)
