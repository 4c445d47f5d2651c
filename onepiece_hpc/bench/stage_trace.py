"""Where a stage's time goes on its GPU: each stage runner alone and the plain pipeline call, timed
and traced with torch.profiler, in one process on one device.

    python -m onepiece_hpc.bench.stage_trace JOB.yaml [--batch 1] [--ops FILE]

For each it gives the wall time of a clean call (after a warm-up) and, from a traced call, the
GPU's busy time (the union of kernels, copies and fills), the idle time between them (host-side
gaps: Python, launches, waits on the host), the copies by kind, the host's waits on the device,
and the largest gaps. The decode's output conversion is also timed on its own, diffusers' way
(to float32 on the host, then uint8) against ours (uint8 on the device, then to the host). Prints
one JSON object; with --ops, also writes each trace's top operators as text.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
from pathlib import Path

from onepiece_hpc.bench.harness import start_one_device, synced_clock, unit_of

#: host-side CUDA runtime calls that wait for the device (a pageable cudaMemcpyAsync does too)
WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy", "cudaMemcpyAsync")
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def device_activity(events: list[dict], wall_s: float) -> dict:
    """The GPU's busy and idle seconds, copies, host waits and largest gaps, from a chrome trace's
    events (`cat`, `name`, `ts` and `dur` in microseconds), over a call that took `wall_s`."""
    device = sorted((e["ts"], e["ts"] + e["dur"], e["cat"], e["name"]) for e in events
                    if e.get("cat") in DEVICE_CATEGORIES and "dur" in e)
    busy, gaps, end = 0.0, [], None
    for start, stop, _, name in device:
        if end is None or start > end:
            if end is not None:
                gaps.append((start - end, name))
            busy += stop - start
            end = stop
        elif stop > end:
            busy += stop - end
            end = stop
    copies: dict[str, list[float]] = {}
    for start, stop, category, name in device:
        if category == "gpu_memcpy":
            entry = copies.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += (stop - start) / 1e6
    waits: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "cuda_runtime" and e.get("name") in WAITS and "dur" in e:
            entry = waits.setdefault(e["name"], [0, 0.0])
            entry[0] += 1
            entry[1] += e["dur"] / 1e6
    kernels = [stop - start for start, stop, category, _ in device if category == "kernel"]
    gaps.sort(reverse=True)
    return {"wall_s": wall_s, "device_busy_s": busy / 1e6, "device_idle_s": max(0.0, wall_s - busy / 1e6),
            "device_busy_share": busy / 1e6 / wall_s if wall_s else 0.0,
            "kernels": len(kernels), "kernel_s": sum(kernels) / 1e6,
            "gaps_over_100us": sum(1 for gap, _ in gaps if gap > 100), "gap_s": sum(g for g, _ in gaps) / 1e6,
            "largest_gaps": [{"us": round(gap), "before": name[:80]} for gap, name in gaps[:5]],
            "copies": {name: {"count": c, "s": s} for name, (c, s) in copies.items()},
            "host_waits": {name: {"count": c, "s": s} for name, (c, s) in waits.items()}}


def _trace(call, gpu: bool) -> tuple[dict, object, str]:
    """A first call (the warm-up, timed), a clean timed call, then one traced with torch.profiler
    (its own wall time: the profiler adds host time). Returns the figures, the clean call's result
    and the trace's top operators by device and by host time."""
    from torch.profiler import ProfilerActivity, profile

    synced = synced_clock(gpu)
    t0 = synced()
    call()
    first = synced() - t0
    t0 = synced()
    result = call()
    clean = synced() - t0
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if gpu else [])]
    with profile(activities=activities) as prof:
        t0 = synced()
        call()
        traced = synced() - t0
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    averages = prof.key_averages()
    ops = "\n".join(averages.table(sort_by=key, row_limit=20, max_name_column_width=70)
                    for key in (["self_cuda_time_total"] if gpu else []) + ["self_cpu_time_total"])
    return {"first_call_s": first, "clean_wall_s": clean, **device_activity(events, traced)}, result, ops


def _conversions(adapter, params, batch: int, device, dtype, gpu: bool) -> dict:
    """The decode's output conversion on VAE-shaped pixels: diffusers' postprocess to "np" and
    uint8 on the host, against `pixels_to_uint8`; and the uint8 copy to pageable or pinned memory."""
    import torch
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.video_processor import VideoProcessor

    from onepiece_hpc.models.pipeline_adapter import pixels_to_uint8, to_uint8

    video = adapter.output_kind == "video"
    shape = (batch, 3, params.frames, params.height, params.width) if video else (batch, 3, params.height, params.width)
    pixels = torch.randn(shape, device=device).clamp(-1.2, 1.2).to(dtype)

    def diffusers_way():
        if video:
            return to_uint8(VideoProcessor().postprocess_video(pixels, output_type="np"))
        return to_uint8(VaeImageProcessor().postprocess(pixels, output_type="np", do_denormalize=[True] * batch))

    synced = synced_clock(gpu)

    def best_of(call, times: int = 3) -> float:
        seconds = []
        for _ in range(times):
            t0 = synced()
            call()
            seconds.append(synced() - t0)
        return min(seconds)

    same = bool((pixels_to_uint8(pixels).numpy() == diffusers_way()).all())
    on_device = pixels.movedim(1, -1).contiguous().to(torch.uint8)
    pinned = torch.empty(on_device.shape, dtype=torch.uint8, pin_memory=gpu)
    return {"frames_bytes": on_device.numel(), "same_bits": same,
            "diffusers_postprocess_then_uint8_s": best_of(diffusers_way),
            "uint8_on_device_then_host_s": best_of(lambda: pixels_to_uint8(pixels)),
            "uint8_to_pageable_s": best_of(lambda: on_device.cpu()),
            "uint8_to_pinned_s": best_of(lambda: pinned.copy_(on_device))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="onepiece-stage-trace")
    parser.add_argument("job", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--ops", type=Path, default=None, help="write each trace's top operators to this file")
    parser.add_argument("--skip-plain", action="store_true", help="trace the stages only")
    args = parser.parse_args(argv)

    prepared, placement, gpu = start_one_device(args.job)
    import torch

    adapter = prepared.model.adapter
    unit = unit_of(list(prepared.plan.items[:args.batch]))
    record: dict = {"job": str(args.job), "device": torch.cuda.get_device_name(0) if gpu else "cpu",
                    "batch": args.batch, "stages": {}}
    inputs: dict = {}
    ops: list[str] = []
    for stage in adapter.topology:
        runner = adapter.load(stage, placement)
        record["stages"][stage], inputs, text = _trace(lambda run=runner, given=inputs: run(unit, given), gpu)
        ops.append(f"== {stage} ==\n{text}")
        runner = None
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()
    inputs = None
    record["decode_output_conversion"] = _conversions(adapter, unit.params, args.batch, placement.device,
                                                      placement.dtype, gpu)
    if not args.skip_plain:
        gc.collect()
        plain = adapter.load_plain(placement)
        record["plain"], _, text = _trace(lambda: plain(unit), gpu)
        ops.append(f"== plain call ==\n{text}")
        record["plain"]["phases_s"] = plain.phases(unit)[1]
    if args.ops is not None:
        args.ops.write_text("\n\n".join(ops) + "\n", encoding="utf-8")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
