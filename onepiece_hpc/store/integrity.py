"""Digests against bytes: which done items of a data file are damaged, and marking items to be
generated again (raw bytes at the done flags' offset, as the writer writes them)."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc.store import schema as s
from onepiece_hpc.store.datafile import digest
from onepiece_hpc.store.index import ItemDataset
from onepiece_hpc.store.safe_read import (
    HDF5_ERRORS,
    damaged_error,
    read_dataset,
    short,
)


def damaged_items(file: h5py.File, path: Path, indices: np.ndarray, datasets: tuple[ItemDataset, ...],
                  batch_bytes: int = 256 * 2**20) -> np.ndarray:
    """Local indices among `indices` whose bytes (in every one of `datasets`, the layout's per-item
    datasets) don't match their digest."""
    try:
        shapes = [file[d.path].shape for d in datasets]
    except HDF5_ERRORS as err:
        raise damaged_error(path, f"its outputs can't be found ({short(err)})") from None
    digests = read_dataset(file, s.DIGEST, path)
    if len(indices) and (digests.shape[0] < len(indices) or min(shape[0] for shape in shapes) <= int(indices[-1])):
        raise damaged_error(path, f"its datasets are shorter than its done flags ({shapes[0][0]} outputs, "
                            f"{digests.shape[0]} digests)")
    per_item = max(1, sum(int(np.prod(shape[1:])) for shape in shapes))
    step = max(1, batch_bytes // per_item)
    bad = []
    for begin in range(0, len(indices), step):
        chosen = indices[begin:begin + step]
        lo, hi = int(chosen[0]), int(chosen[-1]) + 1
        blocks = [read_dataset(file, d.path, path, np.s_[lo:hi]) for d in datasets]
        for local in chosen:
            if digest(*(block[local - lo] for block in blocks)) != bytes(digests[local]):
                bad.append(int(local))
    return np.array(bad, dtype=np.int64)


def clear_done_flags(path: Path, file: h5py.File, local: np.ndarray) -> None:
    """Mark items of a data file not done (raw bytes at the done flags' offset), durably."""
    try:
        offset = file[s.DONE].id.get_offset()
    except HDF5_ERRORS as err:
        raise damaged_error(path, f"/done can't be found ({short(err)})") from None
    if offset is None:
        raise damaged_error(path, "/done has no storage of its own (it was not written by onepiece)")
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        for item in local:
            os.pwrite(fd, b"\x00", offset + int(item))
        os.fsync(fd)
    finally:
        os.close(fd)
