"""The plain loop users run today, the baseline `onepiece bench pipeline --device cuda` sets every
configuration against: one process a GPU, the whole diffusers pipeline loaded, its own `__call__`
per batch of prompts, each output written as uint8 frames to a .npy file of its own.

    mpiexec -n N python -m onepiece_hpc.bench.plain_loop JOB.yaml --report-dir DIR
        [--batches 1,2,4] [--repeats 1] [--write-dir DIR] [--gpu-memory-gib G]

Rank r takes every N-th item. It first tries each batch size on its first items (a warm-up call,
then `--repeats` timed calls, each timed by stage: see `PlainRunner.phases`); every rank then
runs at the batch that was fastest per item on the slowest rank. The timed loop covers all of the
rank's items from a common start, each call's outputs written before the next call, as a user's
loop writes them.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np


def batches_of(items: list, size: int) -> list[list]:
    """Consecutive runs of at most `size` items that share their params (one pipeline call each)."""
    runs: list[list] = []
    for item in items:
        if runs and len(runs[-1]) < size and runs[-1][0].params == item.params:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def unit_of(items: list):
    from onepiece_hpc.models.base import UnitInput

    return UnitInput(unit=items[0].index, items=tuple(i.index for i in items), prompts=tuple(i.prompt for i in items),
                     negative_prompts=tuple(i.negative_prompt for i in items), seeds=tuple(i.seed for i in items),
                     params=items[0].params)


def slowest(probes: list[dict[int, float]]) -> dict[int, float]:
    """Per batch, the slowest rank's seconds per item, over the batches every rank could try."""
    common = set.intersection(*(set(p) for p in probes))
    return {batch: max(p[batch] for p in probes) for batch in common}


def choose_batch(seconds_per_item: dict[int, float]) -> int:
    """The batch with the fewest seconds per item (the smaller one on a tie)."""
    return min(sorted(seconds_per_item), key=lambda batch: seconds_per_item[batch])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="onepiece-plain-loop")
    parser.add_argument("job", type=Path)
    parser.add_argument("--report-dir", type=Path, required=True, help="each rank writes rank-R.json here")
    parser.add_argument("--batches", default="1", help="batch sizes to try, e.g. 1,2,4")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per batch size, after a warm-up")
    parser.add_argument("--write-dir", type=Path, default=None, help="write each output here as ITEM.npy")
    parser.add_argument("--gpu-memory-gib", type=float, default=None, help="cap each rank's GPU memory")
    args = parser.parse_args(argv)

    from mpi4py import MPI

    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries()
    import torch

    from onepiece_hpc import environment
    from onepiece_hpc.runtime.gpus import place_rank
    from onepiece_hpc.runtime.prepare import prepare

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    prepared = prepare(args.job, None, environment.cache_dir())
    placement = place_rank(prepared, comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank(), args.gpu_memory_gib)
    gpu = placement.device.type == "cuda"
    mine = list(prepared.plan.items[rank::size])

    def synced() -> float:
        if gpu:
            torch.cuda.synchronize()
        return time.perf_counter()

    started = synced()
    plain = prepared.model.adapter.load_plain(placement)
    load_s = synced() - started

    started = synced()
    probe: dict[int, float] = {}
    phases: dict[int, dict[str, float]] = {}
    for batch in sorted({int(b) for b in args.batches.split(",")}):
        if batch > len(mine):
            continue
        unit = unit_of(mine[:batch])
        plain(unit)  # warm-up: kernel choice, workspaces, the allocator's growth
        timed = []
        for _ in range(args.repeats):
            t0 = synced()
            _, split = plain.phases(unit)
            timed.append((synced() - t0, split))
        seconds, split = min(timed, key=lambda pair: pair[0])
        probe[batch], phases[batch] = seconds / batch, {stage: s / batch for stage, s in split.items()}
    batch = choose_batch(slowest(comm.allgather(probe)))
    probe_s = synced() - started

    if args.write_dir is not None:
        args.write_dir.mkdir(parents=True, exist_ok=True)
    comm.Barrier()  # every rank has its pipeline and has tried its batches: the loop starts together
    start = time.perf_counter()
    busy = write_s = 0.0
    for chunk in batches_of(mine, batch):
        t0 = time.perf_counter()
        outputs = plain(unit_of(chunk))  # host uint8 arrays: the device's work for them is done
        t1 = time.perf_counter()
        if args.write_dir is not None:
            for item, output in zip(chunk, outputs):
                np.save(args.write_dir / f"{item.index}.npy", output)
        t2 = time.perf_counter()
        busy += t1 - t0
        write_s += t2 - t1
    done_at = time.perf_counter() - start
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if gpu
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    row = {"rank": rank, "items": len(mine), "batch": batch, "busy_s": busy, "write_s": write_s,
           "done_at_s": done_at, "load_s": load_s, "probe_s": probe_s, "peak_memory_mb": peak_mb,
           "probe_s_per_item": probe, "phases_s_per_item": phases.get(batch, {})}
    (args.report_dir / f"rank-{rank}.json").write_text(json.dumps(row))


if __name__ == "__main__":
    main()
