"""The reference path: every stage in one process, no MPI, committed to the job's HDF5 output.

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
from onepiece_hpc.runtime.failures import MONOLITHIC, FailureBudget, UnitFailure, describe
from onepiece_hpc.runtime.interrupts import Terminated
from onepiece_hpc.runtime.prepare import Prepared
from onepiece_hpc.runtime.progress import ProgressReporter
from onepiece_hpc.planning.plan import Plan, Unit
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


def run_monolithic(prepared: Prepared, progress: Callable[[int, int], ProgressReporter] | None = None,
                   retry_failed: bool = False) -> RunSummary:
    """Run every unit neither done nor failed (with `retry_failed`: every failed unit) through
    every stage of the model's topology and commit it; raises StageFailed when the stage itself fails."""
    plan, adapter, placement = prepared.plan, prepared.model.adapter, prepared.placement
    if placement.device.type == "cpu":
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
        runners = {stage: adapter.load(stage, placement) for stage in adapter.topology} if len(pending) else {}
        budget = FailureBudget()
        failed_units = 0
        with progress(len(plan.items), len(plan.items) - int(wanted.sum())) if progress else nullcontext() as reporter:
            for index in pending.tolist():
                unit = plan.unit(index)
                outcome = _generate(plan, unit, runners, prepared.layout.tensors, placement.device)
                if isinstance(outcome, UnitFailure):
                    log.warning("%s failed: %s", outcome.where, outcome.error)
                    budget.failed(outcome, again=bool(failed_before[unit.start:unit.stop].any()))
                    failed_units += 1
                    if reporter:
                        reporter.advance(int(wanted[unit.start:unit.stop].sum()))
                        reporter.note(f"{failed_units} unit(s) failed")
                    continue
                _commit(unit, *outcome, writer, spent, reporter)
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


def _generate(plan: Plan, unit: Unit, runners: dict, outputs: tuple[str, ...],
              device: torch.device) -> tuple[dict[str, np.ndarray], list[float]] | UnitFailure:
    """One unit through every stage: its outputs and each stage's seconds, or how it failed.

    Exception, not BaseException: Ctrl-C and SIGTERM stop the run. An out-of-memory is the unit's:
    the memory it held is given back before the next unit."""
    request = unit_input(plan, unit)
    tensors: dict[str, torch.Tensor] = {}
    seconds: list[float] = []
    stage = next(iter(runners))
    try:
        for stage in runners:
            t0 = time.perf_counter()
            tensors = runners[stage](request, tensors)
            seconds.append(time.perf_counter() - t0)
        return {name: tensors[name].numpy() for name in outputs}, seconds
    except Exception as err:
        failure = UnitFailure(unit.index, unit.start, unit.stop, stage, MONOLITHIC, describe(err))
    del tensors  # the error and its frames are gone too: nothing holds the unit's tensors now
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return failure


def _commit(unit: Unit, outputs: dict[str, np.ndarray], seconds: list[float], writer: OutputWriter,
            spent: dict[str, float], reporter: ProgressReporter | None) -> None:
    t0 = time.perf_counter()
    per_item = np.array(seconds) / unit.size
    count = writer.commit(unit.start, outputs, np.tile(per_item, (unit.size, 1)))
    seconds.append(time.perf_counter() - t0)
    for name, value in zip(spent, seconds):
        spent[name] += value
    if reporter:
        reporter.advance(count)


def _record(writer: OutputWriter, failures: list[UnitFailure]) -> None:
    """Failures the budget judged to be the units' own go into the output."""
    for failure in failures:
        writer.record_failed(failure.start, failure.stop, failure.stage, failure.rank, failure.error)
