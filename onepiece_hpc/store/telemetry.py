"""The telemetry record of a staged run: one file per run beside the outputs (format 3), or one
group per run inside a format-2 file. A damaged record is skipped, never fatal: the outputs
don't depend on it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc.errors import UserError

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
TABLES = {"ranks": RANK_DTYPE, "samples": SAMPLE_DTYPE, "stages": STAGE_DTYPE, "moves": MOVE_DTYPE}


@dataclass(frozen=True)
class RunTelemetry:
    name: str  # "run3": the run's number in the output's journal
    ranks: np.ndarray
    samples: np.ndarray
    stages: np.ndarray
    moves: np.ndarray
    attrs: dict


def write_telemetry(path: Path, ranks: np.ndarray, samples: np.ndarray, stages: np.ndarray, moves: np.ndarray,
                    attrs: dict) -> None:
    """Write one run's telemetry as the HDF5 file `path` (a temporary file its caller publishes)."""
    with h5py.File(path, "w", locking=False) as f:
        for name, rows in (("ranks", ranks), ("samples", samples), ("stages", stages), ("moves", moves)):
            f.create_dataset(name, data=rows.astype(TABLES[name]))
        f.attrs.update(attrs)


def _read_group(name: str, group) -> RunTelemetry:
    tables = {key: group[key][...] if key in group else np.empty(0, dtype=dtype) for key, dtype in TABLES.items()}
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in group.attrs.items()}
    return RunTelemetry(name=name, attrs=attrs, **tables)


def read_runs(folders: list[Path], index_file: Path | None = None) -> list[RunTelemetry]:
    """Every readable run record: files under `folders`, or groups of a format-2 `index_file`."""
    found: list[RunTelemetry] = []
    for folder in folders:
        for path in sorted(folder.glob("run-*.h5")) if folder.is_dir() else []:
            try:
                with h5py.File(path, "r", locking=False) as f:
                    found.append(_read_group(f"run{int(path.stem.removeprefix('run-'))}", f))
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
