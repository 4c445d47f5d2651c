"""The baseline users run today: every rank runs the whole pipeline on its share of the units.

    mpiexec -n N python -m onepiece_hpc.runtime.data_parallel JOB.yaml --report-dir DIR

Used by `onepiece bench pipeline` as the yardstick for the staged runtime; it writes no output
file (the staged run's write cost is reported separately, per item, in its telemetry).
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
    if prepared.placement.device.type == "cpu":
        torch.set_num_threads(prepared.job.cpu_threads)
    comm.Barrier()
    start = time.monotonic()
    runners = {stage: prepared.model.adapter.load(stage, prepared.placement) for stage in Stage}
    load_s = time.monotonic() - start
    busy = 0.0
    items = 0
    for unit in prepared.plan.units[rank::size]:
        request = unit_input(prepared.plan, unit)
        t0 = time.monotonic()
        tensors: dict = {}
        for stage in Stage:
            tensors = runners[stage](request, tensors)
        busy += time.monotonic() - t0
        items += unit.size
    done_at = time.monotonic() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {"rank": rank, "items": items, "busy_s": busy, "load_s": load_s, "done_at_s": done_at,
           "peak_memory_mb": peak_mb}
    (args.report_dir / f"rank-{rank}.json").write_text(json.dumps(row))


if __name__ == "__main__":
    main()
