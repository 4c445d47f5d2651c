"""How the store scales with the item count: creating an output, filling it, and reading it
back (inspect, verify), each in its own process so its time and peak memory are its own.

The items are synthetic (no model, no planning: that is the runtime's cost, not the store's)
and small (8 x 8 px by default), so that 10^7 of them fit on a laptop's disk; the metadata
the store keeps per item is the same as for any size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from onepiece_hpc.store import schema as s
from onepiece_hpc.store.output import OutputLayout, OutputWriter, StoreSettings
from onepiece_hpc.store.provenance import Provenance, RunInfo

BATCH = 4096  # items a commit while filling


class SyntheticItems:
    """An ItemSource of `count` items that costs nothing per item until a range's rows are asked for."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.name, self.fingerprint = f"scale-{count}", f"scale-{count:016x}"
        self.model_identity, self.microbatch, self.execution = "synthetic", 1, "cpu/float32/threads=1"

    def __len__(self) -> int:
        return self.count

    def keys(self, start: int, stop: int) -> list[str]:
        return [f"{i:064x}" for i in range(start, stop)]

    def rows(self, start: int, stop: int) -> np.ndarray:
        table = np.zeros(stop - start, dtype=s.ITEM_DTYPE)
        index = np.arange(start, stop)
        table["index"], table["seed"], table["unit"] = index, index, index
        table["key"] = np.char.zfill(np.char.mod("%x", index), 64).astype("S64")
        table["prompt"] = np.array([f"synthetic prompt number {i}" for i in range(start, stop)], dtype=object)
        table["negative_prompt"] = table["meta"] = table["image"] = ""
        table["steps"], table["guidance"], table["height"], table["width"], table["frames"] = 4, 1.0, 8, 8, 1
        return table

    def where(self, index: int) -> str:
        return f"synthetic item {index}"


def _provenance() -> Provenance:
    return Provenance(job_file="", job_path="", package_version="", model_ref="synthetic", model_identity="synthetic",
                      model_config_hash="", pipeline_class="", torch_version="", diffusers_version="",
                      transformers_version="", python_version="", host="", created_at="")


def fill(output: Path, count: int, shape: tuple[int, ...]) -> dict:
    """Create the output and commit every item; the seconds each part took."""
    began = time.perf_counter()
    writer = OutputWriter.open(output, SyntheticItems(count), OutputLayout("image", shape), _provenance(), "bench",
                               settings=StoreSettings(), run=RunInfo(mode="bench"))
    opened = time.perf_counter()
    block = np.random.default_rng(0).integers(0, 255, size=(BATCH, *shape), dtype=np.uint8)
    zeros = np.zeros((BATCH, len(s.TIMING_STAGES) - 1))
    first_commit = None
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        writer.commit(start, block[:size], zeros[:size])
        first_commit = first_commit or time.perf_counter()
    writer.close("completed")
    done = time.perf_counter()
    return {"create_s": opened - began, "first_commit_s": first_commit - began, "fill_s": done - began}


def _measured(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident MB and stdout of a child process."""
    began = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} failed")
    return seconds, usage.ru_maxrss / 1024, out


def _disk(folder: Path) -> tuple[int, int]:
    apparent = used = 0
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            apparent += stat.st_size
            used += stat.st_blocks * 512
    return apparent, used


def bench_scale(folder: Path, counts: list[int], shape: tuple[int, ...] = (8, 8, 3)) -> list[dict]:
    """One record per item count: create, first commit, fill, inspect, verify; seconds and peak MB."""
    cli = [sys.executable, "-m", "onepiece_hpc.cli.main"]
    records = []
    for count in counts:
        output = folder / f"scale-{count}" / "out.h5"
        seconds, peak, out = _measured([sys.executable, "-m", "onepiece_hpc.bench.store_scale", str(output),
                                        str(count), ",".join(map(str, shape))])
        record = {"items": count, "item_shape": list(shape), **json.loads(out), "fill_peak_mb": peak}
        record["inspect_s"], record["inspect_peak_mb"], _ = _measured([*cli, "inspect", str(output), "--json"])
        record["verify_s"], record["verify_peak_mb"], _ = _measured([*cli, "verify", str(output)])
        apparent, used = _disk(output.parent)
        with open(Path(s.data_folder(output)) / s.JOURNAL, encoding="utf-8") as journal:
            files = sum(1 for line in journal if '"file"' in line)
        record |= {"data_files": files, "apparent_gb": apparent / 1e9, "on_disk_gb": used / 1e9,
                   "index_kb": output.stat().st_size / 1e3}
        records.append(record)
    return records


if __name__ == "__main__":
    target, items, dims = Path(sys.argv[1]), int(sys.argv[2]), tuple(int(x) for x in sys.argv[3].split(","))
    print(json.dumps(fill(target, items, dims)))
