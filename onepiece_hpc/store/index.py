"""The index file: an output's identity and file layout, written once, plus virtual datasets
that present the data files as one output to anyone who opens it with h5py.

Its cost does not depend on the item count: attributes, one provenance group, and one
virtual mapping per data file and dataset. Data files that don't exist yet read as fill values
(not done), which is what they are.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc.store import schema as s

DEFAULT_FILE_BYTES = 4 * 2**30
MAX_ITEMS_PER_FILE = 65_536  # small items: a data file's rows (prompts) are written when it is created
MAX_FILES = 1_000_000


@dataclass(frozen=True)
class ItemDataset:
    """One per-item uint8 dataset of an output: /outputs/NAME. NAME also names the last stage's
    tensor that fills it ("images" or "videos" for the outputs themselves; "STEP/images" for the
    images a workflow's step STEP keeps)."""

    name: str
    kind: str  # "image" | "video"
    item_shape: tuple[int, ...]

    @property
    def path(self) -> str:
        return f"{s.OUTPUTS}/{self.name}"

    @property
    def item_bytes(self) -> int:
        return int(np.prod(self.item_shape))

    def as_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "item_shape": list(self.item_shape)}


@dataclass(frozen=True)
class StoreLayout:
    """How an output's items are spread over data files, and what each item holds: its output
    (`output_kind`, `item_shape`) and any `extras` (more per-item datasets, e.g. a workflow's
    kept intermediate images)."""

    items_total: int
    items_per_file: int
    output_kind: str
    item_shape: tuple[int, ...]
    timing_columns: tuple[str, ...] = s.TIMING_STAGES  # each stage of the pipeline, then the write
    extras: tuple[ItemDataset, ...] = ()

    @property
    def files(self) -> int:
        return max(1, math.ceil(self.items_total / self.items_per_file))

    @property
    def datasets(self) -> tuple[ItemDataset, ...]:
        """Every per-item dataset, the outputs first: the order of an item's bytes under its digest."""
        return (ItemDataset(s.OUTPUT_DATASETS[self.output_kind], self.output_kind, self.item_shape), *self.extras)

    @property
    def item_bytes(self) -> int:
        return sum(d.item_bytes for d in self.datasets)

    @property
    def format_version(self) -> int:
        """The oldest format that describes this layout: an older reader refuses a file it would misread."""
        return s.FORMAT_VERSION if self.extras else s.FORMAT_VERSION_ONE_DATASET

    def file_range(self, index: int) -> tuple[int, int]:
        start = index * self.items_per_file
        return start, min(self.items_total, start + self.items_per_file)

    def file_of(self, item: int) -> int:
        return item // self.items_per_file

    def file_bytes(self, index: int) -> int:
        """About what a data file takes on disk: outputs plus the small per-item datasets."""
        start, stop = self.file_range(index)
        return (stop - start) * (self.item_bytes + s.DIGEST_BYTES + 8 * len(self.timing_columns) + 9 + 256) + 65_536


def choose_items_per_file(items_total: int, item_bytes: int, file_bytes: int = DEFAULT_FILE_BYTES) -> int:
    """Items a data file holds: as many as fit in `file_bytes` (at least one, at most MAX_ITEMS_PER_FILE),
    at most all of them."""
    per_file = max(1, min(MAX_ITEMS_PER_FILE, file_bytes // max(1, item_bytes)))
    per_file = max(per_file, math.ceil(items_total / MAX_FILES))
    return max(1, min(items_total, per_file))


def data_file_name(index: int) -> str:
    return s.DATA_FILE.format(index)


def data_file_path(index_path: Path, file_index: int) -> Path:
    return Path(s.data_folder(index_path)) / data_file_name(file_index)


def new_store_id() -> str:
    return uuid.uuid4().hex


def attrs_digest(attrs: dict) -> str:
    """sha256 of an index's attributes (all but the digest itself): HDF5 keeps no checksum of them, so a
    flipped bit in a fingerprint or a count would otherwise pass unseen."""
    def plain(value):
        if isinstance(value, np.ndarray):
            return [plain(v) for v in value.tolist()]
        if isinstance(value, np.generic):
            value = value.item()
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    canonical = {str(plain(key)): plain(value) for key, value in attrs.items() if key != ATTRS_DIGEST}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()


ATTRS_DIGEST = "attrs_digest"


def seal(f: h5py.File) -> None:
    """Store the digest of the file's root attributes, written last."""
    f.attrs[ATTRS_DIGEST] = attrs_digest(dict(f.attrs))


def write_index(tmp: Path, index_path: Path, layout: StoreLayout, attrs: dict, provenance: dict[str, str]) -> None:
    """Write the index for an output that will live at `index_path` into the file `tmp`."""
    relative_folder = os.path.basename(s.data_folder(index_path))
    with h5py.File(tmp, "w", locking=False) as f:
        f.attrs.update({**attrs, "format": s.FORMAT, "kind": s.KIND_OUTPUT, **layout_attrs(layout),
                        "items_per_file": layout.items_per_file, "files": layout.files})
        f.create_group(s.PROVENANCE).attrs.update(provenance)
        ranges = [(f"{relative_folder}/{data_file_name(k)}", *layout.file_range(k)) for k in range(layout.files)]
        write_views(f, ranges, layout)
        seal(f)


def layout_attrs(layout: StoreLayout) -> dict:
    """The attributes an index (or a merged view) describes its items with."""
    attrs = {"format_version": layout.format_version, "items_total": layout.items_total,
             "output_kind": layout.output_kind, "item_shape": np.array(layout.item_shape, dtype="<i8"),
             "timing_columns": np.array(layout.timing_columns, dtype=h5py.string_dtype())}
    if layout.extras:
        attrs[s.EXTRA_OUTPUTS] = json.dumps([d.as_json() for d in layout.extras])
    return attrs


def write_views(f: h5py.File, ranges: list[tuple[str, int, int]], layout: StoreLayout) -> None:
    """Virtual datasets over data files: `ranges` lists (file name, first item, end) in order."""
    views = [
        (s.ITEMS, (), s.ITEM_DTYPE, None),
        (s.DONE, (), np.dtype("u1"), 0),
        (s.DIGEST, (s.DIGEST_BYTES,), np.dtype("u1"), 0),
        (s.TIMINGS, (len(layout.timing_columns),), np.dtype("<f8"), np.nan),
        (s.COMMITTED_AT, (), np.dtype("<f8"), np.nan),
        *((d.path, tuple(d.item_shape), np.dtype("u1"), 0) for d in layout.datasets),
    ]
    total = layout.items_total
    f.require_group(s.OUTPUTS)
    for name, tail, dtype, fill in views:
        view = h5py.VirtualLayout(shape=(total, *tail), dtype=dtype)
        for file_name, start, stop in ranges:
            view[start:stop] = h5py.VirtualSource(file_name, name, shape=(stop - start, *tail), dtype=dtype)
        f.create_virtual_dataset(name, view, fillvalue=fill)
    f[s.TIMINGS].attrs["stages"] = np.array(layout.timing_columns, dtype=h5py.string_dtype())
