"""How fast rank 0 commits outputs, against a plain sequential file write of the same bytes.

The staged runtime writes on rank 0: decode ranks put finished outputs into rank 0's rings and
rank 0 commits them straight from the ring slots into the HDF5 file (no copy in between). This
measures whether that single writer keeps up, for item sizes users generate.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from onepiece_hpc.bench.store_scale import SyntheticItems
from onepiece_hpc.store.output import OutputLayout, OutputWriter

#: item shapes, and what 8 decode ranks produce per second on one H100 each (DESIGN.md figures:
#: SD1.5-class VAE decodes 8 images of 512 px in 0.12 s; Wan2.1 decodes an 81-frame 480p video
#: in 2.07 s; SDXL-class 1024 px taken as 4x the 512 px cost)
CASES = {
    "image-512": ((512, 512, 3), 8 * 8 / 0.12),
    "image-1024": ((1024, 1024, 3), 8 * 8 / 0.48),
    "video-81x480x832": ((81, 480, 832, 3), 8 / 2.07),
}


def _plain_write_seconds(folder: Path, payload: np.ndarray, count: int) -> float:
    """A plain sequential write of the same bytes, made durable with one fsync at the end."""
    fd, path = tempfile.mkstemp(dir=folder, prefix=".raw-")
    try:
        start = time.perf_counter()
        for _ in range(count):
            os.write(fd, payload.data)
        os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)


def bench_writer(prepared, folder: Path, cases: list[str], max_bytes: int = 2 * 2**30) -> list[dict]:
    """One record per case: commits per second, MB/s, and ratios to the plain write and to demand.

    Each case commits `max_bytes` of items (synthetic ones, as many as that takes: a steady state,
    with its data files created and synced as a long run does), then closes the output.
    """
    records = []
    for name in cases:
        shape, demand = CASES[name]
        item_bytes = int(np.prod(shape))
        count = max(2, max_bytes // item_bytes)
        payload = np.random.default_rng(0).integers(0, 255, size=(1, *shape), dtype=np.uint8)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".bench-writer-") as scratch:
            output = Path(scratch) / "bench.h5"
            kind = "video" if len(shape) == 4 else "image"
            layout = OutputLayout(kind=kind, item_shape=shape)
            writer = OutputWriter.open(output, SyntheticItems(count), layout, prepared.provenance, mode="bench",
                                       settings=prepared.store)
            timings = np.zeros((1, 3))
            start = time.perf_counter()
            for index in range(count):
                writer.commit(index, payload, timings)
            writer.close("completed")  # the last group's sync and flags count too
            seconds = time.perf_counter() - start
            plain = _plain_write_seconds(Path(scratch), payload, count)
        rate = count / seconds
        records.append({
            "case": name, "item_bytes": item_bytes, "items": count,
            "commits_per_s": rate, "mb_per_s": rate * item_bytes / 1e6,
            "plain_write_mb_per_s": count * item_bytes / plain / 1e6,
            "ratio_to_plain_write": plain / seconds,
            "demand_8_decoders_per_s": demand, "headroom": rate / demand,
        })
    return records
