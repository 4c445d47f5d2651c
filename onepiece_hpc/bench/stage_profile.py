"""Per-stage service times at several batch sizes, in one process on one device: the floor.

    python -m onepiece_hpc.bench.stage_profile JOB.yaml --batches 1,2,4 [--gpu-memory-gib G]

Each stage is loaded alone, run once to warm up and then `--repeats` times per batch size on
the job's first items; its seconds per item at its best batch size, summed over the stages, is
the floor: what one device needs per output if every stage ran back to back at its best batch
with no loading, transfers or waiting. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

from onepiece_hpc.bench.harness import peak_memory_mb, start_one_device, synced_clock, unit_of


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="onepiece-stage-profile")
    parser.add_argument("job", type=Path)
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gpu-memory-gib", type=float, default=None)
    args = parser.parse_args(argv)

    prepared, placement, gpu = start_one_device(args.job, args.gpu_memory_gib)
    import torch

    items = prepared.plan.items
    batches = [int(b) for b in args.batches.split(",")]
    clock = synced_clock(gpu)

    def timed(call) -> tuple[float, object]:
        t0 = clock()
        result = call()
        return clock() - t0, result

    stages: dict[str, dict] = {}
    inputs: dict[int, dict] = {batch: {} for batch in batches}
    for stage in prepared.model.adapter.topology:
        load_s, runner = timed(lambda: prepared.model.adapter.load(stage, placement))
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        per_item: dict[int, float] = {}
        for batch in batches:
            if batch > len(items) or batch not in inputs:  # an earlier stage could not run it
                continue
            unit = unit_of(items[:batch])
            try:
                _, outputs = timed(lambda: runner(unit, inputs[batch]))
                seconds = min(timed(lambda: runner(unit, inputs[batch]))[0] for _ in range(args.repeats))
            except torch.OutOfMemoryError:
                break
            per_item[batch] = seconds / batch
            inputs[batch] = outputs
        inputs = {batch: inputs[batch] for batch in per_item}
        best = min(per_item, key=per_item.get)
        stages[stage] = {"load_s": load_s, "s_per_item": per_item, "best_batch": best,
                         "best_s_per_item": per_item[best], "peak_memory_mb": peak_memory_mb(gpu) if gpu else None}
        runner = outputs = None
        gc.collect()  # the stage's modules go before the next stage loads: each peak is its own
        if gpu:
            torch.cuda.empty_cache()
    floor = sum(s["best_s_per_item"] for s in stages.values())
    print(json.dumps({"device": torch.cuda.get_device_name(0) if gpu else "cpu", "stages": stages,
                      "floor_s_per_item": floor}))


if __name__ == "__main__":
    main()
