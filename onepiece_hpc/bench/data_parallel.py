"""The baseline users run today: every rank runs the whole pipeline on its share of the units.

    mpiexec -n N python -m onepiece_hpc.bench.data_parallel JOB.yaml --report-dir DIR
        [--gpu-memory-gib G] [--offload encode] [--warm-up] [--write-dir DIR]

On GPUs each rank takes one GPU (rank r on GPU r of its node). `--offload STAGE` keeps that
stage's weights in page-locked host memory between uses and copies them in for each unit: what
a pipeline must do when all of its models do not fit the GPU at once. `--warm-up` runs the
rank's first unit once before the clock starts (as the plain loop and the staged ranks do in the
bench). `--write-dir` writes each output as ITEM.npy from a writer thread, while the GPU runs the
next unit. Used by `onepiece bench pipeline` beside the plain loop and the staged runtime.
"""

from __future__ import annotations

import argparse
import json
import queue
import resource
import threading
import time
from pathlib import Path

import numpy as np


class NpyWriter:
    """Writes (item, array) pairs as ITEM.npy in a thread of its own, one unit behind the compute
    (np.save lets go of the GIL while it writes); `close` waits for the last and re-raises a failure."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.seconds = folder, 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="npy-writer", daemon=True)
        self._thread.start()

    def put(self, items, arrays: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((items, arrays))

    def _drain(self) -> None:
        while (job := self._queue.get()) is not None:
            started = time.perf_counter()
            try:
                for item, array in zip(*job):
                    np.save(self.folder / f"{item}.npy", array)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                self._error = err
            self.seconds += time.perf_counter() - started

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="onepiece-data-parallel")
    parser.add_argument("job", type=Path)
    parser.add_argument("--report-dir", type=Path, required=True, help="each rank writes rank-R.json here")
    parser.add_argument("--gpu-memory-gib", type=float, default=None, help="cap each rank's GPU memory")
    parser.add_argument("--offload", action="append", default=[], choices=["encode", "denoise", "decode"],
                        help="keep this stage's weights on the host between units (repeatable)")
    parser.add_argument("--warm-up", action="store_true", help="run the first unit once before the clock starts")
    parser.add_argument("--write-dir", type=Path, default=None, help="write each output here as ITEM.npy")
    args = parser.parse_args(argv)

    from mpi4py import MPI

    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries()
    import torch

    from onepiece_hpc import environment
    from onepiece_hpc.runtime.monolithic import unit_input
    from onepiece_hpc.runtime.gpus import place_rank
    from onepiece_hpc.runtime.prepare import prepare

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    prepared = prepare(args.job, None, environment.cache_dir())
    placement = place_rank(prepared, comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank(), args.gpu_memory_gib)
    gpu = placement.device.type == "cuda"
    topology = prepared.model.adapter.topology
    offloaded = set(args.offload)
    comm.Barrier()
    start = time.monotonic()
    runners = {}
    for stage in topology:
        runners[stage] = prepared.model.adapter.load(stage, placement)
        if stage in offloaded:
            runners[stage].offload()
    load_s = time.monotonic() - start
    offload_s = 0.0

    def run_unit(unit) -> dict:
        nonlocal offload_s
        request = unit_input(prepared.plan, unit)
        tensors: dict = {}
        for stage in topology:
            if stage in offloaded:
                t1 = time.monotonic()
                runners[stage].restore()
                offload_s += time.monotonic() - t1
            tensors = runners[stage](request, tensors)
            if stage in offloaded:
                t1 = time.monotonic()
                runners[stage].offload()
                offload_s += time.monotonic() - t1
        if gpu:
            torch.cuda.synchronize()
        return tensors

    units = prepared.plan.units[rank::size]
    start = time.monotonic()
    if args.warm_up and units:
        run_unit(units[0])
    warm_up_s, offload_s = time.monotonic() - start, 0.0
    writer = NpyWriter(args.write_dir) if args.write_dir is not None else None
    comm.Barrier()  # every rank has its weights: the work starts together
    start = time.monotonic()
    busy = 0.0
    items = 0
    for unit in units:
        t0 = time.monotonic()
        tensors = run_unit(unit)
        busy += time.monotonic() - t0
        if writer is not None:
            (outputs,) = tensors.values()  # decode's one tensor: the unit's images or videos
            writer.put([item.index for item in prepared.plan.unit_items(unit)], outputs.numpy())
        items += unit.size
    if writer is not None:
        writer.close()
    done_at = time.monotonic() - start
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if gpu
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    row = {"rank": rank, "items": items, "busy_s": busy, "load_s": load_s, "done_at_s": done_at,
           "offload_s": offload_s, "peak_memory_mb": peak_mb, "warm_up_s": warm_up_s,
           "write_s": writer.seconds if writer is not None else 0.0}
    (args.report_dir / f"rank-{rank}.json").write_text(json.dumps(row))


if __name__ == "__main__":
    main()
