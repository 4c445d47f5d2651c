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
import time
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="onepiece-stage-profile")
    parser.add_argument("job", type=Path)
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gpu-memory-gib", type=float, default=None)
    args = parser.parse_args(argv)

    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries()
    import torch

    from onepiece_hpc import environment
    from onepiece_hpc.models.base import UnitInput
    from onepiece_hpc.runtime.prepare import prepare

    prepared = prepare(args.job, None, environment.cache_dir())
    placement = prepared.placement
    gpu = placement.device.type == "cuda"
    if gpu:
        from onepiece_hpc.runtime.gpus import take_gpu

        placement = replace(placement, device=take_gpu(0, args.gpu_memory_gib))
    items = prepared.plan.items
    batches = [int(b) for b in args.batches.split(",")]

    def unit_of(batch: int) -> UnitInput:
        chosen = items[:batch]
        return UnitInput(unit=0, items=tuple(i.index for i in chosen), prompts=tuple(i.prompt for i in chosen),
                         negative_prompts=tuple(i.negative_prompt for i in chosen),
                         seeds=tuple(i.seed for i in chosen), params=chosen[0].params)

    def timed(call) -> float:
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = call()
        if gpu:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, result

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
            unit = unit_of(batch)
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
                               "best_s_per_item": per_item[best],
                               "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else None}
        runner = outputs = None
        gc.collect()  # the stage's modules go before the next stage loads: each peak is its own
        if gpu:
            torch.cuda.empty_cache()
    floor = sum(s["best_s_per_item"] for s in stages.values())
    print(json.dumps({"device": torch.cuda.get_device_name(0) if gpu else "cpu", "stages": stages,
                      "floor_s_per_item": floor}))


if __name__ == "__main__":
    main()
