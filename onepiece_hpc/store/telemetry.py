"""The telemetry record of a staged run: one file per run beside the outputs (format 3), or one
group per run inside a format-2 file. A damaged record is skipped, never fatal: the outputs
don't depend on it.

While a run goes on, rank 0 keeps a live copy of its record, `run-NNNN.live.h5`, first after
LIVE_FIRST_S, then replaced every LIVE_EVERY_S (so `onepiece report` works on a run in
progress); the final record replaces it as the run closes. A live copy whose final record exists is ignored; one without (a killed run) is
read as the run's record, marked `live`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.files import AlreadyThere, current_umask, temporary_path, write_new

log = logging.getLogger(__name__)

_text = h5py.string_dtype("utf-8")

RANK_DTYPE = np.dtype([
    ("rank", "<i4"), ("host", _text), ("stage", _text), ("units", "<i8"), ("busy_s", "<f8"),
    ("wait_s", "<f8"), ("send_s", "<f8"), ("elapsed_s", "<f8"), ("load_s", "<f8"), ("peak_memory_mb", "<f8"),
    ("links", _text),  # the fabric of each of the rank's channels; absent in records before it
])
SAMPLE_DTYPE = np.dtype([
    ("t", "<f8"), ("rank", "<i4"), ("state", _text), ("stage", _text), ("unit", "<i8"), ("units_done", "<i8"),
    ("busy_s", "<f8"), ("wait_s", "<f8"), ("send_s", "<f8"), ("backlog", "<i8"), ("memory_mb", "<f8"),
])
MOVE_DTYPE = np.dtype([
    ("t", "<f8"), ("rank", "<i4"), ("source", _text), ("target", _text), ("reason", _text), ("drain_s", "<f8"),
    ("load_s", "<f8"), ("cost_s", "<f8"),
])
STAGE_DTYPE = np.dtype([
    ("stage", _text), ("ranks", "<i4"), ("units", "<i8"), ("busy_share", "<f8"), ("wait_share", "<f8"),
    ("send_share", "<f8"), ("mean_service_s", "<f8"), ("peak_memory_mb", "<f8"),
])
#: every unit this run dispatched: when (the samples' clock), and when it was committed (nan: not, or failed)
UNIT_DTYPE = np.dtype([("unit", "<i8"), ("items", "<i8"), ("dispatched_t", "<f8"), ("committed_t", "<f8")])
TABLES = {"ranks": RANK_DTYPE, "samples": SAMPLE_DTYPE, "stages": STAGE_DTYPE, "moves": MOVE_DTYPE,
          "units": UNIT_DTYPE}
LIVE_FIRST_S = 5.0    # the first live copy, so a report soon after the start shows something
LIVE_EVERY_S = 30.0
LIVE_SUFFIX = ".live"


@dataclass(frozen=True)
class RunTelemetry:
    name: str  # "run3": the run's number in the output's journal
    ranks: np.ndarray
    samples: np.ndarray
    stages: np.ndarray
    moves: np.ndarray
    attrs: dict
    units: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=UNIT_DTYPE))  # absent in older records

    @property
    def live(self) -> bool:
        """A record of a run still going (or killed before it closed)."""
        return bool(self.attrs.get("live", 0))


def write_telemetry(path: Path, tables: dict[str, np.ndarray], attrs: dict) -> None:
    """Write one run's telemetry as the HDF5 file `path` (a temporary file its caller publishes);
    `tables` by the names of TABLES (the missing ones are written empty)."""
    with h5py.File(path, "w", locking=False) as f:
        for name, dtype in TABLES.items():
            f.create_dataset(name, data=tables.get(name, np.empty(0, dtype=dtype)).astype(dtype))
        f.attrs.update(attrs)


def save_record(folder: Path, run: int, tables: dict[str, np.ndarray], attrs: dict, live: bool, owner: str) -> None:
    """Publish run `run`'s record in `folder`: the final one once (it removes the live copy), or
    the live copy, replaced. Never raises: the outputs don't depend on it (`owner` names them)."""
    final = folder / s.TELEMETRY_FILE.format(run)
    current = final.with_name(final.name.replace(".h5", f"{LIVE_SUFFIX}.h5"))
    attrs = {**attrs, "run": run, "live": int(live)}
    try:
        folder.mkdir(exist_ok=True)
        if live:
            with temporary_path(folder, f".{current.name}.") as tmp:
                write_telemetry(tmp, tables, attrs)
                os.chmod(tmp, 0o666 & ~current_umask())
                os.replace(tmp, current)
            return
        write_new(final, lambda tmp: write_telemetry(tmp, tables, attrs))
        current.unlink(missing_ok=True)
    except (OSError, UserError, AlreadyThere) as err:
        if live:
            log.info("%s: the live telemetry copy was not replaced (%s)", owner, err)
        else:
            log.warning("%s: this run's telemetry was not saved (%s); the outputs are not affected", owner, err)


def _read_group(name: str, group) -> RunTelemetry:
    tables = {key: group[key][...] if key in group else np.empty(0, dtype=dtype) for key, dtype in TABLES.items()}
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in group.attrs.items()}
    return RunTelemetry(name=name, attrs=attrs, **tables)


def read_runs(folders: list[Path], index_file: Path | None = None) -> list[RunTelemetry]:
    """Every readable run record: files under `folders`, or groups of a format-2 `index_file`."""
    found: list[RunTelemetry] = []
    for folder in folders:
        for path in sorted(folder.glob("run-*.h5")) if folder.is_dir() else []:
            number = path.stem.removeprefix("run-")
            live = number.endswith(LIVE_SUFFIX)
            if live and path.with_name(path.name.replace(LIVE_SUFFIX, "")).exists():
                continue  # the run closed: its final record stands
            try:
                with h5py.File(path, "r", locking=False) as f:
                    run = _read_group(f"run{int(number.removesuffix(LIVE_SUFFIX))}", f)
                found.append(run)
            except (OSError, KeyError, ValueError, TypeError) as err:
                log.warning("%s: telemetry record can't be read (%s); skipped", path, err)
    if index_file is not None:
        try:
            with h5py.File(index_file, "r", locking=False) as f:
                for name, group in sorted(f.get("telemetry", {}).items()):
                    found.append(_read_group(name, group))
        except (OSError, KeyError, ValueError, TypeError) as err:
            log.warning("%s: telemetry can't be read (%s); skipped", index_file, err)
    return found


def latest_run(view) -> RunTelemetry:
    """The last staged run's telemetry of an output view, or a UserError saying there is none."""
    runs = read_runs(view.telemetry_dirs, view.path if view.kind == "format-2" else None)
    if not runs:
        raise UserError(f"{view.path} has no telemetry record; run the job staged (-n N) to measure one")
    return max(runs, key=lambda run: int(run.name.removeprefix("run")))
