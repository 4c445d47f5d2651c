"""The telemetry records a report draws: the latest staged run of an output, or of each shard of a
merged view. Older records lack the `units` table, `started_unix` and the live flag: each is
optional here. A one-process output has none, and the report says so instead of drawing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepiece_hpc.store import schema as s
from onepiece_hpc.store.reader import OutputView
from onepiece_hpc.store.telemetry import UNIT_DTYPE, RunTelemetry, read_runs

MAX_SECTIONS = 6  # shards whose telemetry is drawn (a merged sweep can have thousands)


@dataclass(frozen=True)
class StagedRun:
    """One staged run's record, as the report reads it."""

    shard: str                 # the source's label in a merged view; "" for a plain output
    record: RunTelemetry
    units: np.ndarray | None   # UNIT_DTYPE rows, None where the record predates the table

    @property
    def live(self) -> bool:
        return self.record.live

    @property
    def started_unix(self) -> float | None:
        value = self.record.attrs.get("started_unix")
        try:
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    @property
    def title(self) -> str:
        where = f"{self.shard}: " if self.shard else ""
        return f"{where}{self.record.name}" + (" (live record of the run in progress)" if self.live else "")


@dataclass(frozen=True)
class TelemetryFound:
    runs: list[StagedRun]   # at most MAX_SECTIONS
    shards_with: int        # shards (or the output) that have a record
    shards_without: int


def _units_of(record: RunTelemetry) -> np.ndarray | None:
    units = record.units
    if not len(units) or not set(UNIT_DTYPE.names) <= set(units.dtype.names or ()):
        return None  # a record from before the table (read back empty)
    rows = np.empty(len(units), dtype=UNIT_DTYPE)
    for name in UNIT_DTYPE.names:
        rows[name] = units[name]
    return rows


def _latest(runs: list[RunTelemetry]) -> RunTelemetry | None:
    def number(run: RunTelemetry) -> int:
        digits = run.name.removeprefix("run")
        return int(digits) if digits.isdigit() else -1
    return max(runs, key=lambda run: (number(run), int(run.attrs.get("live", 0) or 0))) if runs else None


def staged_runs(view: OutputView) -> TelemetryFound:
    """The latest record of the output, or of each shard of a merged view (the first MAX_SECTIONS drawn)."""
    if view.kind == s.KIND_MERGED:
        sources = [(str(src["path"]), (view.path.parent / str(src["path"])).resolve()) for src in view.sources]
        # a format-3 source keeps its records beside it, a format-2 one inside it
        places = [(label, [Path(s.data_folder(path)) / s.TELEMETRY_DIR], path) for label, path in sources]
    else:
        places = [("", view.telemetry_dirs, view.path if view.kind == "format-2" else None)]
    found, without, beyond = [], 0, 0
    for label, folders, index in places:
        if len(found) == MAX_SECTIONS:  # only counted: reading them would be wasted
            has = any(folder.is_dir() and any(folder.glob("run-*.h5")) for folder in folders)
            beyond += has
            without += not has
            continue
        latest = _latest(read_runs(folders, index))
        if latest is None:
            without += 1
            continue
        found.append(StagedRun(label, latest, _units_of(latest)))
    return TelemetryFound(found, len(found) + beyond, without)
