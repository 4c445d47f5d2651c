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
            record = json.loads(line)
            event = record["event"]
        except (ValueError, KeyError, TypeError):
            view.unreadable_lines += 1
            continue
        if event == "run":
            entry = {**record, "status": "running", "finished_at": "", "items_committed": 0}
            by_number[int(record.get("run", len(view.runs)))] = entry
            view.runs.append(entry)
        elif event == "end" and isinstance(by_number.get(record.get("run")), dict):
            by_number[record["run"]].update(status=record.get("status", "?"),
                                            finished_at=record.get("finished_at", ""),
                                            items_committed=record.get("items_committed", 0))
        elif event == "file" and isinstance(record.get("file"), int):
            view.files.add(record["file"])
        elif event == "file_removed" and isinstance(record.get("file"), int):
            view.files.discard(record["file"])  # `verify --repair` moved a damaged one aside
    return view


def append(path: Path, record: dict) -> None:
    """Add one record, durably; a full disk is a UserError naming the folder."""
    line = (json.dumps(record, ensure_ascii=True, sort_keys=True) + "\n").encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise no_space_error(path.parent, len(line), err) from None
        raise UserError(f"cannot write the output's journal {path} ({err.strerror}); everything committed is kept; "
                        "fix: make it a plain file you can write (not a link), then run again") from None
