"""A writer run without a model: the store calls of a run (open, commits, telemetry, close) with
deterministic outputs, in a process light enough to kill at every write it makes.

    python tests/store_driver.py JOB_FILE OUTPUT

With STORE_DRIVER_PAUSE_AT=N and STORE_DRIVER_GO=PATH it stops after N commits until PATH exists.

The job file's prompts become items of 8 x 8 px; item i's pixels are all (i * 37) % 251.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from onepiece_hpc.bench.store_scale import SyntheticItems
from onepiece_hpc.errors import UserError
from onepiece_hpc.store.output import OutputLayout, OutputWriter, StoreSettings
from onepiece_hpc.store.provenance import Provenance, RunInfo
from onepiece_hpc.store.telemetry import MOVE_DTYPE, RANK_DTYPE, SAMPLE_DTYPE, STAGE_DTYPE

SHAPE = (8, 8, 3)
SETTINGS = StoreSettings(file_bytes=1000, sync_interval_s=0.0)  # a few items a data file, a sync a commit


def pixels(index: int) -> np.ndarray:
    return np.full(SHAPE, (index * 37) % 251, dtype=np.uint8)


class DriverItems(SyntheticItems):
    """The job file's prompts as items (no planning code: this process must start fast)."""

    def __init__(self, job_file: Path) -> None:
        lines = (job_file.parent / "prompts.txt").read_text(encoding="utf-8").split("\n")
        prompts = [line for line in lines if line.strip()]
        super().__init__(len(prompts))
        self.prompts = prompts
        self.name = "driver"
        self.fingerprint = hashlib.sha256("\n".join(prompts).encode()).hexdigest()

    def rows(self, start: int, stop: int) -> np.ndarray:
        table = super().rows(start, stop)
        table["prompt"] = np.array(self.prompts[start:stop], dtype=object)
        return table


def _pause(go: Path) -> None:
    """Say so, and wait until the test lets the run go on (it changes the world meanwhile)."""
    Path(f"{go}.paused").touch()
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def run(job_file: Path, output: Path, pause_at: int = -1, go: Path = Path("")) -> int:
    """Generate what is missing; returns how many items this run committed."""
    items = DriverItems(job_file)
    provenance = Provenance(job_file="", job_path=str(job_file), package_version="test", model_ref="driver",
                            model_identity="driver-model", model_config_hash="", pipeline_class="none",
                            torch_version="", diffusers_version="", transformers_version="", python_version="",
                            host="", created_at="")
    writer = OutputWriter.open(output, items, OutputLayout("image", SHAPE), provenance, "driver",
                               settings=SETTINGS, run=RunInfo(mode="driver", software={"torch": "none"}))
    status = "failed"
    try:
        done = writer.done_mask()
        for index in range(len(items)):
            if not done[index]:
                writer.commit(index, pixels(index)[None], np.zeros((1, 3)))
                if writer.committed_this_run == pause_at:
                    _pause(go)
        ranks = np.array([(1, "h", "encode", 1, 0.1, 0.2, 0.0, 1.0, 0.5, 10.0, "to 0 shm")], dtype=RANK_DTYPE)
        samples = np.array([(0.0, 1, "serving", "encode", 0, 1, 0.1, 0.2, 0.0, 0, 10.0)], dtype=SAMPLE_DTYPE)
        stages = np.array([("encode", 1, 1, 0.5, 0.5, 0.0, 0.1, 10.0)], dtype=STAGE_DTYPE)
        writer.record_telemetry({"ranks": ranks, "samples": samples, "stages": stages,
                                 "moves": np.empty(0, dtype=MOVE_DTYPE)}, {"policy": "static"})
        status = "completed"
    finally:
        writer.close(status)
    return writer.committed_this_run


if __name__ == "__main__":
    try:
        pause = int(os.environ.get("STORE_DRIVER_PAUSE_AT", "-1"))
        print(run(Path(sys.argv[1]), Path(sys.argv[2]), pause, Path(os.environ.get("STORE_DRIVER_GO", ""))))
    except UserError as err:
        print(f"error: {err.render()}", file=sys.stderr)
        sys.exit(2)
