"""The journal: an append-only JSON-lines record of an output's runs, data files and failed units.

Only the lock holder appends; each record is one write(2) of one line, synced. A kill can at
worst leave a last line without its newline, which readers skip and the next append ends
first. Nothing in the journal is needed to read the outputs: it says which runs happened (with
their software and hardware), how they ended, which data files were created (so a missing one
is damage, not "not yet"), and which units failed when generated (so a resume leaves them be
until a run retries them; a record that is lost only means the unit is generated again).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.store.files import NO_SPACE, no_space_error


@dataclass(frozen=True)
class FailedUnit:
    """Items [start, stop) (one work unit) raised while being generated: where, and what it said."""

    start: int
    stop: int
    run: int
    stage: str
    rank: int | str  # the stage rank, or "monolithic"
    error: str
    at: str = ""

    @property
    def by(self) -> str:
        """'encode on rank 3', or 'encode on monolithic'."""
        return f"{self.stage} on {self.rank if isinstance(self.rank, str) else f'rank {self.rank}'}"

    def shifted(self, offset: int) -> FailedUnit:
        """The same failure inside a view whose items start `offset` earlier (a merged view)."""
        return replace(self, start=self.start + offset, stop=self.stop + offset)

    def as_dict(self) -> dict:
        return {"start": self.start, "stop": self.stop, "run": self.run, "stage": self.stage, "rank": self.rank,
                "error": self.error, "at": self.at}


@dataclass
class JournalView:
    """What the journal says, read in one pass."""

    runs: list[dict] = field(default_factory=list)  # each run's start record, with its end merged in
    files: set[int] = field(default_factory=set)     # data files that were created
    failures: dict[int, FailedUnit] = field(default_factory=dict)  # by first item: the latest failure not retried since
    unreadable_lines: int = 0

    @property
    def next_run(self) -> int:
        return len(self.runs)


def read_journal(path: Path) -> JournalView:
    view = JournalView()
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().split("\n")
    except FileNotFoundError:
        return view
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()  # a last line without its newline was cut short by a kill
        view.unreadable_lines += 1
    by_number: dict[int, dict] = {}
    for line in lines:
        try:
            _apply(view, by_number, json.loads(line))
        except (ValueError, KeyError, TypeError, AttributeError):  # not a record we wrote: torn or damaged
            view.unreadable_lines += 1
    return view


def _apply(view: JournalView, by_number: dict[int, dict], record: dict) -> None:
    event = record["event"]
    if event == "run":
        number = int(record.get("run", len(view.runs)))
        entry = {**record, "run": number, "status": "running", "finished_at": "", "items_committed": 0}
        by_number[number] = entry
        view.runs.append(entry)
    elif event == "end":
        entry = by_number.get(int(record["run"]))
        if entry is None:
            raise KeyError(record["run"])
        entry.update(status=str(record.get("status", "?")), finished_at=str(record.get("finished_at", "")),
                     items_committed=int(record.get("items_committed", 0)))
    elif event == "file":
        view.files.add(_whole(record["file"]))
    elif event == "file_removed":
        view.files.discard(_whole(record["file"]))  # `verify --repair` moved a damaged one aside
    elif event == "failed":
        failure = FailedUnit(_whole(record["start"]), _whole(record["stop"]), _whole(record["run"]),
                             _text(record["stage"]), _rank(record["rank"]), _text(record["error"]),
                             _text(record.get("at", "")))
        if not 0 <= failure.start < failure.stop:
            raise ValueError(failure)
        view.failures[failure.start] = failure
    elif event == "recovered":  # the unit starting there was generated since it failed
        view.failures.pop(_whole(record["start"]), None)
    else:
        raise ValueError(event)


def _whole(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(value)
    return value


def _text(value) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _rank(value) -> int | str:
    return value if isinstance(value, str) else _whole(value)


def failed_record(run: int, start: int, stop: int, stage: str, rank: int | str, error: str, at: str) -> dict:
    """The journal line of a unit that failed (read back as a FailedUnit)."""
    return {"event": "failed", "run": run, "start": start, "stop": stop, "stage": stage, "rank": rank,
            "error": error, "at": at}


def recovered_record(run: int, start: int, stop: int, at: str) -> dict:
    """The journal line of a failed unit that a later run generated."""
    return {"event": "recovered", "run": run, "start": start, "stop": stop, "at": at}


def append(path: Path, record: dict) -> None:
    """Add one record, durably; a full disk is a UserError naming the folder.

    A last line that a kill cut short is ended first, so that this record stays a line of its own."""
    line = (json.dumps(record, ensure_ascii=True, sort_keys=True) + "\n").encode("ascii")
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            view = memoryview(line)
            while view:  # a short write (a disk filling up) goes on where it stopped: one line stays one line
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise no_space_error(path.parent, len(line), err) from None
        raise UserError(f"cannot write the output's journal {path} ({err.strerror}); everything committed is kept; "
                        "fix: make it a plain file you can write (not a link), then run again") from None
