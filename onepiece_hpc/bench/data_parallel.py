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

import queue
import threading
import time
from pathlib import Path

import numpy as np

from onepiece_hpc.bench.harness import (
    baseline_parser,
    peak_memory_mb,
    start_baseline_rank,
    synced_clock,
    timed_loop,
    write_rank_report,
)


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
    parser = baseline_parser("onepiece-data-parallel")
    parser.add_argument("--offload", action="append", default=[], metavar="STAGE",
                        help="keep this stage's weights on the host between units (repeatable)")
    parser.add_argument("--warm-up", action="store_true", help="run the first unit once before the clock starts")
    args = parser.parse_args(argv)

    me = start_baseline_rank(args.job, args.gpu_memory_gib)
    from onepiece_hpc.bench.gpu_layout import parse_offload
    from onepiece_hpc.runtime.monolithic import unit_input

    prepared, placement = me.prepared, me.placement
    topology = prepared.model.adapter.topology
    offloaded = set(parse_offload(args.offload, topology.names))
    me.comm.Barrier()
    start = time.monotonic()
    runners = {}
    for stage in topology:
        runners[stage] = prepared.model.adapter.load(stage, placement)
        if stage in offloaded:
            runners[stage].offload()
    load_s = time.monotonic() - start
    offload_s = 0.0
    synced = synced_clock(me.gpu)

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
        synced()
        return tensors

    units = prepared.plan.units[me.rank::me.size]
    start = time.monotonic()
    if args.warm_up and units:
        run_unit(units[0])
    warm_up_s, offload_s = time.monotonic() - start, 0.0
    writer = NpyWriter(args.write_dir) if args.write_dir is not None else None

    def write(unit, tensors: dict) -> None:
        if writer is not None:
            (outputs,) = tensors.values()  # the last stage's one tensor: the unit's images or videos
            writer.put([item.index for item in prepared.plan.unit_items(unit)], outputs.numpy())

    me.comm.Barrier()  # every rank has its weights: the work starts together
    times = timed_loop(units, run_unit, write, finish=writer.close if writer is not None else lambda: None)
    row = {"rank": me.rank, "items": sum(unit.size for unit in units), "busy_s": times.busy_s, "load_s": load_s,
           "done_at_s": times.done_at_s, "offload_s": offload_s, "peak_memory_mb": peak_memory_mb(me.gpu),
           "warm_up_s": warm_up_s, "write_s": writer.seconds if writer is not None else 0.0}
    write_rank_report(args.report_dir, me.rank, row)


if __name__ == "__main__":
    main()
