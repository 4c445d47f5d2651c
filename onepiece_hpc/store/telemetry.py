"""The telemetry record of a staged run: one group per run under /telemetry."""

from __future__ import annotations

import h5py
import numpy as np

_text = h5py.string_dtype("utf-8")

RANK_DTYPE = np.dtype([
    ("rank", "<i4"), ("host", _text), ("stage", _text), ("units", "<i8"), ("busy_s", "<f8"),
    ("wait_s", "<f8"), ("send_s", "<f8"), ("elapsed_s", "<f8"), ("load_s", "<f8"), ("peak_memory_mb", "<f8"),
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


def write_telemetry(file: h5py.File, run_row: int, ranks: np.ndarray, samples: np.ndarray,
                    stages: np.ndarray, moves: np.ndarray, attrs: dict) -> None:
    group = file.require_group("telemetry").create_group(f"run{run_row}")
    group.create_dataset("ranks", data=ranks.astype(RANK_DTYPE))
    group.create_dataset("samples", data=samples.astype(SAMPLE_DTYPE))
    group.create_dataset("stages", data=stages.astype(STAGE_DTYPE))
    group.create_dataset("moves", data=moves.astype(MOVE_DTYPE))
    group.attrs.update(attrs)
