"""When a unit's failure is the unit's, and when it is the stage's (shared by both run paths).

A unit that raises while generated (an image that can't be decoded, an out-of-memory on one odd
size) fails alone: its items are recorded as failed and the run goes on. But a broken model or
device fails every unit, and must stop the run with its error instead of filling the journal.
The rule, judged on the units in the order their outcomes arrive:

- the first FIRST_UNITS units this run tries fail, before any succeeds (units being retried that
  fail again don't count here: they failed before, so they say nothing new about the stage);
- or the run ends having tried only units that failed, at least one of them new;
- or STREAK units in a row fail, at any time (a device that broke midway).

Failures are held until a later unit succeeds or the run ends, so the failures that stop a run
are never recorded as the items' own (a resume tries them again); at most STREAK are held. Pure
logic: the callers record what `succeeded` and `finish` release, and turn StageFailed into ExitCode.FAILED.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onepiece_hpc.errors import UserError

FIRST_UNITS = 3
STREAK = 32
MONOLITHIC = "monolithic"  # the rank of a one-process run, as failure records name it
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class UnitFailure:
    """A unit raised: its items [start, stop), the stage and rank, and the error as text."""

    unit: int
    start: int
    stop: int
    stage: str
    rank: int | str  # a stage rank's number, or MONOLITHIC
    error: str

    @property
    def where(self) -> str:
        items = f"item {self.start}" if self.stop - self.start == 1 else f"items {self.start}..{self.stop - 1}"
        rank = self.rank if isinstance(self.rank, str) else f"rank {self.rank}"
        return f"unit {self.unit} ({items}), stage {self.stage} on {rank}"


class StageFailed(RuntimeError):
    """The stage itself is failing (see the module's rule); the message names the first failure."""


def describe(err: BaseException) -> str:
    """An error as a failure record keeps it: its type and message, bounded."""
    text = err.render() if isinstance(err, UserError) else str(err)
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


@dataclass
class FailureBudget:
    """Outcomes of a run's units, in order; raises StageFailed when the stage itself is failing."""

    first: int = FIRST_UNITS
    streak: int = STREAK
    held: list[UnitFailure] = field(default_factory=list)  # failures since the last success, not yet recorded
    any_succeeded: bool = False
    new_failures: int = 0  # failures of units that had not failed before, while none succeeded

    def failed(self, failure: UnitFailure, again: bool = False) -> None:
        """A unit failed (`again`: it had failed in an earlier run too, and this run retried it)."""
        self.held.append(failure)
        if not again and not self.any_succeeded:
            self.new_failures += 1
        if not self.any_succeeded and self.new_failures >= self.first:
            raise StageFailed(self._message(f"the first {self.new_failures} units this run tried all failed"))
        if len(self.held) >= self.streak:
            raise StageFailed(self._message(f"{len(self.held)} units in a row failed"))

    def succeeded(self) -> list[UnitFailure]:
        """A unit succeeded: the failures held before it are the units' own; record them now."""
        self.any_succeeded = True
        released, self.held = self.held, []
        return released

    def finish(self) -> list[UnitFailure]:
        """The run tried every unit it had: the failures still held, to record now."""
        if not self.any_succeeded and self.new_failures:
            raise StageFailed(self._message(f"every unit this run tried failed ({len(self.held)})"))
        released, self.held = self.held, []
        return released

    def _message(self, what: str) -> str:
        first = self.held[0]
        return (f"the stage itself is failing: {what}; the first: {first.where}: {first.error}. None of them is "
                "recorded as a failed item (the cause is taken to be the stage's, not the items'); fix the cause "
                "and run again.")


SHOWN_FAILED = 5  # failed units a run's summary lists


def failed_items_summary(plan, failures: list, count: int) -> list[str]:
    """What a run says about its output's failed items: how many, and the first few units (item,
    prompt file line, stage and rank, the error's first line). `failures` are the store's records."""
    lines = [f"{count} item(s) failed; they are recorded in the output and a run leaves them be:"]
    for failure in failures[:SHOWN_FAILED]:
        error = (failure.error.splitlines() or [""])[0]
        lines.append(f"  {_items(plan, failure.start, failure.stop)}: {failure.by}: {error[:300]}")
    if len(failures) > SHOWN_FAILED:
        lines.append(f"  ... and {len(failures) - SHOWN_FAILED} more unit(s) (onepiece inspect OUTPUT --json lists "
                     "them all)")
    return lines


def _items(plan, start: int, stop: int) -> str:
    """'item 7 (prompt file line 8)' or 'items 4..5 (prompt file lines 5..6)'."""
    first, last = int(plan.table.lines[start]), int(plan.table.lines[stop - 1])
    if stop - start == 1:
        return f"item {start} (prompt file line {first})"
    return f"items {start}..{stop - 1} (prompt file lines {first}..{last})"
