"""Per-rank status files for a local launcher: who runs where, on which unit, right now.

`onepiece run -n N` watches these while mpiexec runs. A local MPI runtime tears every rank down
moments after one dies, often before rank 0 can report; the launcher then still knows which
rank died first, its host, stage and unit, and says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class RankStatus:
    rank: int
    host: str
    pid: int
    stage: str
    unit: int = -1
    moving_to: str = ""


class StatusFile:
    """One rank's status, rewritten atomically on every change."""

    def __init__(self, folder: Path, status: RankStatus) -> None:
        self.path = folder / f"rank-{status.rank}.json"
        self.status = status
        self._write()

    def update(self, unit: int | None = None, stage: str | None = None, moving_to: str | None = None) -> None:
        if unit is not None:
            self.status.unit = unit
        if stage is not None:
            self.status.stage = stage
        if moving_to is not None:
            self.status.moving_to = moving_to
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.status)))
        os.replace(tmp, self.path)


def read_statuses(folder: Path) -> dict[int, RankStatus]:
    found = {}
    for path in folder.glob("rank-*.json"):
        try:
            data = json.loads(path.read_text())
            found[int(data["rank"])] = RankStatus(**data)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # mid-replace or foreign; the next poll sees it
    return found
