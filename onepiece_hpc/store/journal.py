"""The journal: an append-only JSON-lines record of an output's runs and data files.

Only the lock holder appends; each record is one write(2) of one line, synced. A kill can at
worst leave a last line without its newline, which readers skip. Nothing in the journal is
needed to read the outputs: it says which runs happened (with their software and hardware),
how they ended, and which data files were created (so a missing one is damage, not "not yet").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.store.files import NO_SPACE, no_space_error


@dataclass
class JournalView:
    """What the journal says, read in one pass."""

    runs: list[dict] = field(default_factory=list)  # each run's start record, with its end merged in
    files: set[int] = field(default_factory=set)     # data files that were created
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
    else:
        raise ValueError(event)


def _whole(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(value)
    return value


def append(path: Path, record: dict) -> None:
    """Add one record, durably; a full disk is a UserError naming the folder."""
    line = (json.dumps(record, ensure_ascii=True, sort_keys=True) + "\n").encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
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
