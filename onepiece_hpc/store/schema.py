"""The HDF5 schema of an output file (documented in README.md, "Output files").

Crash safety rests on one rule: every dataset that changes during a run is allocated in full
when the file is created (early allocation, no fill writes), so a commit writes raw bytes into
place and never touches HDF5 metadata. A SIGKILL can then only leave raw bytes half written,
and those belong to items whose done flag is still 0, which a resume writes again.
"""

from __future__ import annotations

import h5py
import numpy as np

FORMAT = "onepiece-hpc"
FORMAT_VERSION = 2  # 2: /items gained frames and image (video outputs); version 1 files still read

ITEMS = "items"
DONE = "done"
OUTPUTS = "outputs"
TIMINGS = "timings"
COMMITTED_AT = "committed_at"
PROVENANCE = "provenance"
RUNS = "runs"

TIMING_STAGES = ("encode", "denoise", "decode", "write")
REQUIRED_ATTRS = ("format_version", "job_name", "job_fingerprint", "model_identity", "items_total", "output_kind",
                  "microbatch", "execution")
REQUIRED_DATASETS = (ITEMS, DONE, TIMINGS, COMMITTED_AT, RUNS, OUTPUTS, PROVENANCE)
OUTPUT_DATASETS = {"image": "images", "video": "videos"}

_text = h5py.string_dtype("utf-8")

ITEM_DTYPE = np.dtype([
    ("index", "<i8"),
    ("key", "S64"),
    ("prompt", _text),
    ("negative_prompt", _text),
    ("seed", "<i8"),
    ("steps", "<i4"),
    ("guidance", "<f8"),
    ("height", "<i4"),
    ("width", "<i4"),
    ("unit", "<i8"),
    ("meta", _text),
    ("frames", "<i4"),
    ("image", _text),  # the conditioning image's path, "" for none
])

RUN_DTYPE = np.dtype([
    ("started_at", _text),
    ("finished_at", _text),
    ("host", _text),
    ("pid", "<i8"),
    ("mode", _text),
    ("status", _text),
    ("items_committed", "<i8"),
])


def current_items(rows: np.ndarray) -> np.ndarray:
    """/items rows in this version's layout: a version 1 file's rows get frames 1 and no image."""
    if rows.dtype == ITEM_DTYPE:
        return rows
    upgraded = np.empty(len(rows), dtype=ITEM_DTYPE)
    upgraded["frames"] = 1
    upgraded["image"] = ""
    for name in rows.dtype.names:
        upgraded[name] = rows[name]
    return upgraded


def preallocated() -> h5py.h5p.PropDCID:
    """A dataset creation list that allocates all storage now and writes no fill values."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl
