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

import numpy as np

from onepiece_hpc.bench.harness import (
    baseline_parser,
    peak_memory_mb,
    start_baseline_rank,
    synced_clock,
    timed_loop,
    unit_of,
    write_rank_report,
)


def batches_of(items: list, size: int) -> list[list]:
    """Consecutive runs of at most `size` items that share their params (one pipeline call each)."""
    runs: list[list] = []
    for item in items:
        if runs and len(runs[-1]) < size and runs[-1][0].params == item.params:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def slowest(probes: list[dict[int, float]]) -> dict[int, float]:
    """Per batch, the slowest rank's seconds per item, over the batches every rank could try."""
    common = set.intersection(*(set(p) for p in probes))
    return {batch: max(p[batch] for p in probes) for batch in common}


def choose_batch(seconds_per_item: dict[int, float]) -> int:
    """The batch with the fewest seconds per item (the smaller one on a tie)."""
    return min(sorted(seconds_per_item), key=lambda batch: seconds_per_item[batch])


def main(argv: list[str] | None = None) -> None:
    parser = baseline_parser("onepiece-plain-loop")
    parser.add_argument("--batches", default="1", help="batch sizes to try, e.g. 1,2,4")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per batch size, after a warm-up")
    args = parser.parse_args(argv)

    me = start_baseline_rank(args.job, args.gpu_memory_gib)
    mine = list(me.prepared.plan.items[me.rank::me.size])
    synced = synced_clock(me.gpu)

    started = synced()
    plain = me.prepared.model.adapter.load_plain(me.placement)
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
    batch = choose_batch(slowest(me.comm.allgather(probe)))
    probe_s = synced() - started

    if args.write_dir is not None:
        args.write_dir.mkdir(parents=True, exist_ok=True)

    def write(chunk: list, outputs) -> None:
        if args.write_dir is not None:
            for item, output in zip(chunk, outputs):
                np.save(args.write_dir / f"{item.index}.npy", output)

    me.comm.Barrier()  # every rank has its pipeline and has tried its batches: the loop starts together
    # `plain` returns host uint8 arrays: the device's work for them is done
    times = timed_loop(batches_of(mine, batch), lambda chunk: plain(unit_of(chunk)), write)
    row = {"rank": me.rank, "items": len(mine), "batch": batch, "busy_s": times.busy_s, "write_s": times.write_s,
           "done_at_s": times.done_at_s, "load_s": load_s, "probe_s": probe_s, "peak_memory_mb": peak_memory_mb(me.gpu),
           "probe_s_per_item": probe, "phases_s_per_item": phases.get(batch, {})}
    write_rank_report(args.report_dir, me.rank, row)


if __name__ == "__main__":
    main()
