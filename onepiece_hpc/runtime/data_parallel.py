"""The baseline users run today: every rank runs the whole pipeline on its share of the units.

    mpiexec -n N python -m onepiece_hpc.runtime.data_parallel JOB.yaml --report-dir DIR
        [--gpu-memory-gib G] [--offload encode]

On GPUs each rank takes one GPU (rank r on GPU r of its node). `--offload STAGE` keeps that
stage's weights in page-locked host memory between uses and copies them in for each unit: what
a pipeline must do when all of its models do not fit the GPU at once. Used by `onepiece bench
pipeline` as the yardstick for the staged runtime; it writes no output file (the staged run's
write cost is reported separately, per item, in its telemetry).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="onepiece-data-parallel")
    parser.add_argument("job", type=Path)
    parser.add_argument("--report-dir", type=Path, required=True, help="each rank writes rank-R.json here")
    parser.add_argument("--gpu-memory-gib", type=float, default=None, help="cap each rank's GPU memory")
    parser.add_argument("--offload", action="append", default=[], choices=["encode", "denoise", "decode"],
                        help="keep this stage's weights on the host between units (repeatable)")
    args = parser.parse_args(argv)

    from mpi4py import MPI

    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries()
    import torch

    from onepiece_hpc import environment
    from onepiece_hpc.runtime.monolithic import unit_input
    from onepiece_hpc.runtime.prepare import prepare
    from onepiece_hpc.spec.job import Stage

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    prepared = prepare(args.job, None, environment.cache_dir())
    placement = prepared.placement
    gpu = placement.device.type == "cuda"
    if gpu:
        from dataclasses import replace

        from onepiece_hpc.runtime.gpus import gpu_index, take_gpu

        node_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        index = gpu_index(node_rank, holds_manager=False, gpus=torch.cuda.device_count())
        placement = replace(placement, device=take_gpu(index, args.gpu_memory_gib))
    else:
        torch.set_num_threads(prepared.job.cpu_threads)
    offloaded = {Stage(name) for name in args.offload}
    comm.Barrier()
    start = time.monotonic()
    runners = {}
    for stage in Stage:
        runners[stage] = prepared.model.adapter.load(stage, placement)
        if stage in offloaded:
            runners[stage].offload()
    load_s = time.monotonic() - start
    comm.Barrier()  # every rank has its weights: the work starts together
    start = time.monotonic()
    busy = offload_s = 0.0
    items = 0
    for unit in prepared.plan.units[rank::size]:
        request = unit_input(prepared.plan, unit)
        t0 = time.monotonic()
        tensors: dict = {}
        for stage in Stage:
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
        busy += time.monotonic() - t0
        items += unit.size
    done_at = time.monotonic() - start
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if gpu
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    row = {"rank": rank, "items": items, "busy_s": busy, "load_s": load_s, "done_at_s": done_at,
           "offload_s": offload_s, "peak_memory_mb": peak_mb}
    (args.report_dir / f"rank-{rank}.json").write_text(json.dumps(row))


if __name__ == "__main__":
    main()
