"""Data files: a fixed range of items with every per-item dataset (the outputs, and any extra
datasets of the layout), created complete, then written in place as raw bytes at fixed offsets
(never through HDF5, so its metadata can't change).

A data file is published only once it is whole (rows, zeroed flags, storage reserved on disk);
the writer then opens it as a plain file and puts each item's output, digest, timings and
commit time at their offsets, and its done flag only after those bytes are on stable storage.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.files import NO_SPACE, no_space_error, reserve, write_new
from onepiece_hpc.store.index import ItemDataset


def digest(*parts: np.ndarray) -> bytes:
    """The digest an item's bytes carry: sha256 over its datasets' bytes, in the layout's order."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(np.ascontiguousarray(part).data)
    return hasher.digest()


@dataclass(frozen=True)
class DataFileSpec:
    """Where a data file lies and what it holds."""

    path: Path
    index: int
    start: int   # its first item's index in the output
    count: int
    store_id: str
    output_kind: str
    datasets: tuple[ItemDataset, ...]  # the outputs first (StoreLayout.datasets)
    timing_columns: tuple[str, ...] = s.TIMING_STAGES


def create_data_file(spec: DataFileSpec, rows: np.ndarray) -> None:
    """Write the complete data file for `rows` (ITEM_DTYPE, `spec.count` of them) and publish it."""
    def fill(tmp: Path) -> None:
        with h5py.File(tmp, "w", locking=False) as f:
            f.attrs.update({"format": s.FORMAT, "store_id": spec.store_id, "file_index": spec.index,
                            "start": spec.start, "count": spec.count, "output_kind": spec.output_kind})
            f.create_dataset(s.ITEMS, data=rows)
            n, dcpl = spec.count, s.contiguous_preallocated
            stages = len(spec.timing_columns)
            f.create_dataset(s.DONE, shape=(n,), dtype="u1", dcpl=dcpl())[...] = np.zeros(n, dtype="u1")
            f.create_dataset(s.DIGEST, shape=(n, s.DIGEST_BYTES), dtype="u1",
                             dcpl=dcpl())[...] = np.zeros((n, s.DIGEST_BYTES), dtype="u1")
            f[s.DIGEST].attrs["algorithm"] = s.DIGEST_NAME
            timings = f.create_dataset(s.TIMINGS, shape=(n, stages), dtype="<f8", dcpl=dcpl())
            timings[...] = np.full((n, stages), np.nan)  # whole arrays: h5py broadcasts a scalar row by row
            timings.attrs["stages"] = np.array(spec.timing_columns, dtype=h5py.string_dtype())
            timings.attrs["units"] = "seconds per item (a unit's time split evenly over its items)"
            f.create_dataset(s.COMMITTED_AT, shape=(n,), dtype="<f8", dcpl=dcpl())[...] = np.full(n, np.nan)
            outputs = f.create_group(s.OUTPUTS)
            for dataset in spec.datasets:
                outputs.create_dataset(dataset.name, shape=(n, *dataset.item_shape), dtype="u1", dcpl=dcpl())
        fd = os.open(tmp, os.O_RDWR)
        try:
            reserve(fd, os.fstat(fd).st_size, spec.path.parent)
        finally:
            os.close(fd)

    write_new(spec.path, fill)


@dataclass(frozen=True)
class Offsets:
    """Byte offsets of a data file's raw datasets; `outputs` holds (offset, bytes an item) of each
    per-item dataset, in the layout's order."""

    done: int
    digest: int
    timings: int
    committed_at: int
    outputs: tuple[tuple[int, int], ...]
    timing_columns: int = len(s.TIMING_STAGES)


def read_offsets(file: h5py.File, datasets: tuple[ItemDataset, ...]) -> Offsets:
    found = [file[d.path] for d in datasets]
    return Offsets(done=file[s.DONE].id.get_offset(), digest=file[s.DIGEST].id.get_offset(),
                   timings=file[s.TIMINGS].id.get_offset(), committed_at=file[s.COMMITTED_AT].id.get_offset(),
                   outputs=tuple((ds.id.get_offset(), int(np.prod(ds.shape[1:]))) for ds in found),
                   timing_columns=int(file[s.TIMINGS].shape[1]))


class RawDataFile:
    """A published data file opened for raw writes at its datasets' offsets."""

    def __init__(self, path: Path, offsets: Offsets) -> None:
        self.path = path
        self.offsets = offsets
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError as err:
            raise UserError(f"cannot open the data file {path} for writing ({err.strerror}); nothing was changed; "
                            "fix: it must be a plain file you can write (not a link)") from None
        self.dirty = False

    def _pwrite(self, data, offset: int) -> None:
        view = memoryview(data).cast("B")
        try:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as err:
            if err.errno in NO_SPACE:
                raise no_space_error(self.path.parent, len(view), err) from None
            raise
        self.dirty = True

    def write_outputs(self, local: int, outputs: list[np.ndarray]) -> None:
        """The bytes of consecutive items from `local` on, one write a dataset (`outputs` in the
        layout's order)."""
        for (offset, item_bytes), data in zip(self.offsets.outputs, outputs, strict=True):
            self._pwrite(np.ascontiguousarray(data, dtype=np.uint8), offset + local * item_bytes)

    def write_records(self, local: int, digests: np.ndarray, timings: np.ndarray, committed_at: np.ndarray) -> None:
        """Digests, timings and commit times of consecutive items: all of them but outputs and done flags."""
        o = self.offsets
        self._pwrite(np.ascontiguousarray(digests, dtype=np.uint8), o.digest + local * s.DIGEST_BYTES)
        self._pwrite(np.ascontiguousarray(timings, dtype="<f8"), o.timings + local * 8 * o.timing_columns)
        self._pwrite(np.ascontiguousarray(committed_at, dtype="<f8"), o.committed_at + local * 8)

    def write_flags(self, local: np.ndarray, value: int) -> None:
        """Set the done flags of the local indices `local` (sorted) to `value`, in runs of neighbours."""
        if not len(local):
            return
        breaks = np.flatnonzero(np.diff(local) != 1) + 1
        for run in np.split(local, breaks):
            self._pwrite(np.full(len(run), value, dtype=np.uint8), self.offsets.done + int(run[0]))

    def sync(self) -> None:
        if self.dirty:
            os.fsync(self.fd)
            self.dirty = False

    def close(self) -> None:
        self.sync()
        os.close(self.fd)
