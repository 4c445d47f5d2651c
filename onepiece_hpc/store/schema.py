"""The on-disk layout of an output (documented in docs/output-format.md).

An output OUT.h5 is a small index plus a folder beside it, OUT.h5.d/:

    OUT.h5                 the index: the job's identity, the file layout, provenance, and
                           virtual datasets (/items, /done, /digest, /timings, /committed_at,
                           /outputs/<kind>s, and /outputs/STEP/<kind>s for each step a workflow
                           keeps) that read the data files, so OUT.h5 opens in h5py as one
                           output whatever the item count
    OUT.h5.d/data-NNNNN.h5 items [N * per_file, ...): their rows and every per-item dataset,
                           created (complete, preallocated) when the first of its items commits
    OUT.h5.d/journal.jsonl append-only: runs (start, end, versions), data files created, units
                           that failed (and recovered since)
    OUT.h5.d/telemetry/run-NNNN.h5   one file per staged run
    OUT.h5.d/lock          the writer's lock record

The rule that keeps outputs safe: a file that holds committed outputs never changes its HDF5
metadata after it is published. Data files are written complete into a temporary file, synced
and linked into place (never renamed over a path); after that the writer changes raw bytes at
fixed offsets only (contiguous datasets, storage allocated at creation). A kill at any moment
can then leave only half-written raw bytes of items whose done flag is still 0.

An item's digest is the sha256 of its bytes in every per-item dataset, its output first, then
each extra dataset in the order EXTRA_OUTPUTS lists them (for an output of one dataset: of the
output's bytes alone).
"""

from __future__ import annotations

import h5py
import numpy as np

FORMAT = "onepiece-hpc"
#: 4: an index whose items hold more datasets than their outputs (EXTRA_OUTPUTS); 3: index + data
#: files + journal; 2: one file (read, not resumed); 1: v2 without frames
FORMAT_VERSION = 4
FORMAT_VERSION_ONE_DATASET = 3  # what an output of one dataset an item is written as: older readers read it
KIND_OUTPUT = "output"
KIND_MERGED = "merged"

ITEMS = "items"
DONE = "done"
DIGEST = "digest"
OUTPUTS = "outputs"
TIMINGS = "timings"
COMMITTED_AT = "committed_at"
PROVENANCE = "provenance"
RUNS = "runs"  # format 2 only: the run table inside the file

TIMING_STAGES = ("encode", "denoise", "decode", "write")  # the classic pipeline's; an index names its own
OUTPUT_DATASETS = {"image": "images", "video": "videos"}
#: an index's (and a merged view's) JSON list of its items' datasets beside their outputs, each
#: {"name", "kind", "item_shape"} of /outputs/NAME (a workflow's kept steps); absent when none
EXTRA_OUTPUTS = "extra_outputs"
DIGEST_BYTES = 32  # sha256 of an item's output bytes
DIGEST_NAME = "sha256"

INDEX_ATTRS = ("format_version", "kind", "store_id", "job_name", "job_fingerprint", "model_identity", "items_total",
               "items_per_file", "output_kind", "item_shape", "microbatch", "execution")
DATA_ATTRS = ("format", "store_id", "file_index", "start", "count")
V2_ATTRS = ("format_version", "job_name", "job_fingerprint", "model_identity", "items_total", "output_kind",
            "microbatch", "execution")
V2_DATASETS = (ITEMS, DONE, TIMINGS, COMMITTED_AT, RUNS, OUTPUTS, PROVENANCE)

DATA_FILE = "data-{:05d}.h5"
JOURNAL = "journal.jsonl"
LOCK = "lock"
TELEMETRY_DIR = "telemetry"
TELEMETRY_FILE = "run-{:04d}.h5"

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

V2_RUN_DTYPE = np.dtype([
    ("started_at", _text), ("finished_at", _text), ("host", _text), ("pid", "<i8"), ("mode", _text),
    ("status", _text), ("items_committed", "<i8"),
])


def data_folder(index_path) -> str:
    """The folder beside an index that holds its data files, journal, telemetry and lock."""
    return f"{index_path}.d"


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


def contiguous_preallocated() -> h5py.h5p.PropDCID:
    """A dataset creation list: contiguous, all storage allocated now, no fill values written.

    Contiguous storage has one fixed file offset, so the writer can put raw bytes in place
    without HDF5 (see store/datafile.py).
    """
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl
