"""One GPU whose memory is short, four ways, in one process each: what a user's plain loop does
under a cap, and what running the stages in phases does instead.

    python -m onepiece_hpc.bench.phased JOB.yaml --mode MODE --items N [--phase K]
        [--gpu-memory-gib G] [--json FILE]

Modes:
- `resident`: the plain pipeline call in a loop, every component on the GPU (the figure the
  others are measured against: what the GPU does when memory is not short). With a cap it is
  the user's first try: where the whole pipeline fits under the cap, no offload is needed;
- `model-offload`: the plain call with diffusers' `enable_model_cpu_offload` under the cap;
- `group-offload`: the plain call with diffusers' group offloading (leaf level, with streams)
  under the cap, the fastest offload diffusers offers;
- `phased`: our stages in phases of K units: every stage's weights wait in page-locked host
  memory; a phase brings one stage's weights in (one DMA copy), runs K units through it, and
  gives the GPU to the next stage, so the weights cross once per K units instead of once per
  unit. The units' intermediate tensors stay where the stage left them;
- `staged-phased`: the same in the staged runtime (`onepiece run -n N --phases K`): one rank a
  stage on the GPU, taking turns on it as rank 0 gives them (runtime/manager/turns.py), each
  rank warmed up before it serves, outputs committed to HDF5 by rank 0. Its window runs from
  the moment the last rank was ready to the last commit.

Every mode runs one unit first, off the clock (kernel choice, workspaces, first copies), then
times the rest; outputs are kept in memory, not written, in every mode alike. `--warm-steps S`
runs that unit with S denoising steps instead of the job's: the same shapes, so the same kernels
and copies, for cases whose one unit takes minutes (50 steps with guidance at 81 frames).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

MODES = ("resident", "model-offload", "group-offload", "phased", "staged-phased")


def phased_units(runners: dict, requests: list, phase: int, device) -> dict[str, float]:
    """Run `requests` through the stages in phases of `phase` units (runtime/phases.py); the
    seconds spent moving weights in and out, and in each stage's work."""
    from onepiece_hpc.runtime.phases import PhaseTimes, run_phase

    times, seconds = PhaseTimes(), dict.fromkeys(runners, 0.0)
    for first in range(0, len(requests), phase):
        for outcome in run_phase(requests[first:first + phase], runners, device, times):
            if not outcome.ok:
                raise RuntimeError(f"unit {outcome.request.unit} failed in {outcome.failed_stage}: {outcome.error}")
            for stage, spent in zip(runners, outcome.seconds):
                seconds[stage] += spent
    return {"restore": times.restore_s, "offload": times.offload_s, **seconds}


def staged_phased(job: Path, items: int, phase: int, gpu_memory_gib: float | None, folder: Path,
                  gpus: int = 1) -> dict:
    """The job's first `items` prompts through the staged runtime in phases on `gpus` GPUs (a chain
    of stages each): GPU-s/output over the window from the last rank's readiness to the end, the
    turns and their weight moves, each rank's peak."""
    import os
    import sys

    from onepiece_hpc.bench.pipeline_gpu import GpuBench, _job_copy
    from onepiece_hpc.environment import cache_dir
    from onepiece_hpc.errors import UserError
    from onepiece_hpc.runtime.launch import launch
    from onepiece_hpc.runtime.options import RunOptions
    from onepiece_hpc.runtime.prepare import prepare
    from onepiece_hpc.store.reader import open_output
    from onepiece_hpc.store.telemetry import latest_run

    stages = prepare(job, None, cache_dir(), plan=False).model.adapter.topology.names
    bench = GpuBench(job=job, stages=stages, gpus=gpus, stage_ranks=(gpus,) * len(stages),
                     gpu_memory_gib=gpu_memory_gib, offload=(), batches=(1,), policies=("static",),
                     as_root=os.geteuid() == 0, items=items)
    copy = _job_copy(bench, folder, 1, "staged-phased")
    output = folder / "staged-phased.h5"
    options = RunOptions(job=copy, ranks=1 + gpus * len(stages), output=output, phases=phase, warm_up=True,
                         gpu_memory_gib=gpu_memory_gib)
    started = time.perf_counter()
    report = launch(options, bench.as_root, rank_stdout=sys.stderr, env=bench.env)
    if report["status"] != "completed":
        raise UserError(f"the staged run in phases failed: {report.get('error', report)}")
    with open_output(output) as view:
        rows = latest_run(view).ranks
    rows = rows[rows["rank"] > 0]
    window = float(rows["elapsed_s"].min())
    summary = report["summary"]
    return {"wall_s": window, "items": int(summary["committed_now"]), "phase": phase, "gpus": gpus,
            "launch_to_end_s": time.perf_counter() - started, "load_s": float(rows["load_s"].max()),
            "turns": summary["phase_turns"], "weights_s": summary["weights_s"],
            "peak_gib_per_rank": [float(m) / 1024 for m in rows["peak_memory_mb"]],
            "peak_gib": float(rows["peak_memory_mb"].max()) / 1024,
            "stages": summary["stages"]}


def _plain_pipeline(prepared, placement, mode: str):
    """The whole pipeline as a user sets it up for `mode`: built on the GPU (random weights are
    drawn there), then handed to diffusers' offloading, which keeps it on the host."""
    import torch

    call = prepared.model.adapter.load_plain(placement)
    if mode == "resident":
        return call
    call.pipe.to("cpu")
    torch.cuda.empty_cache()
    if mode == "model-offload":
        call.pipe.enable_model_cpu_offload(device=placement.device)
    else:
        call.pipe.enable_group_offload(onload_device=placement.device, offload_device=torch.device("cpu"),
                                       offload_type="leaf_level", use_stream=True)
    return call


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="onepiece-phased")
    parser.add_argument("job", type=Path)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--items", type=int, default=4, help="the job's first N units' items")
    parser.add_argument("--phase", type=int, default=4, help="units a stage runs before the next takes the GPU")
    parser.add_argument("--gpu-memory-gib", type=float, default=None, help="cap torch's GPU memory")
    parser.add_argument("--json", type=Path, default=None, help="write the record here too")
    parser.add_argument("--gpus", type=int, default=1, help="staged-phased: a chain of stage ranks on each of N GPUs")
    parser.add_argument("--warm-steps", type=int, default=None,
                        help="the off-the-clock unit's denoising steps (default: the job's); not for staged-phased")
    args = parser.parse_args(argv)
    if args.warm_steps is not None and (args.warm_steps < 1 or args.mode == "staged-phased"):
        parser.error("--warm-steps takes a count of at least 1, and not with --mode staged-phased "
                     "(its ranks warm up on their own)")

    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries()
    if args.mode == "staged-phased":  # ranks of their own: this process stays off the GPU
        import tempfile

        with tempfile.TemporaryDirectory(prefix="staged-phased-") as folder:
            record = {"mode": args.mode, "job": str(args.job), "gpu_memory_gib": args.gpu_memory_gib,
                      **staged_phased(args.job, args.items, args.phase, args.gpu_memory_gib, Path(folder), args.gpus)}
        record["s_per_output"] = args.gpus * record["wall_s"] / record["items"]  # GPU-seconds
        _emit(record, args.json)
        return
    import torch

    from onepiece_hpc import environment
    from onepiece_hpc.bench.harness import synced_clock
    from onepiece_hpc.runtime.gpus import place_rank, take_gpu
    from onepiece_hpc.runtime.monolithic import unit_input
    from onepiece_hpc.runtime.phases import load_offloaded
    from onepiece_hpc.runtime.prepare import prepare

    prepared = prepare(args.job, None, environment.cache_dir())
    placement = place_rank(prepared, 0, None)
    device = placement.device
    now = synced_clock(device.type == "cuda")
    count = min(prepared.plan.unit_count, max(1, args.items // prepared.job.microbatch) + 1)
    units = [prepared.plan.units[index] for index in range(count)]  # not the whole plan's units
    requests = [unit_input(prepared.plan, u) for u in units]
    warm, timed = requests[0], requests[1:]
    if args.warm_steps is not None:
        warm = dataclasses.replace(warm, params=dataclasses.replace(warm.params, steps=args.warm_steps))
    topology = prepared.model.adapter.topology
    started = time.perf_counter()
    record: dict = {"mode": args.mode, "job": str(args.job), "items": sum(len(r.items) for r in timed),
                    "gpu_memory_gib": args.gpu_memory_gib, "warm_steps": warm.params.steps,
                    "steps": timed[0].params.steps if timed else None,
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    if args.mode == "phased":
        if args.gpu_memory_gib is not None:
            take_gpu(device.index, args.gpu_memory_gib)
        runners = load_offloaded(topology.names, lambda stage: prepared.model.adapter.load(stage, placement))
        record["load_s"] = time.perf_counter() - started
        phased_units(runners, [warm], 1, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = now()
        record["seconds"] = phased_units(runners, timed, args.phase, device)
        record["phase"] = args.phase
    else:
        call = _plain_pipeline(prepared, placement, args.mode)
        if args.gpu_memory_gib is not None:
            take_gpu(device.index, args.gpu_memory_gib)
        record["load_s"] = time.perf_counter() - started
        call(warm)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = now()
        for request in timed:
            call(request)
    wall = now() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    record.update(wall_s=wall, s_per_output=wall / record["items"], peak_gib=peak)
    _emit(record, args.json)


def _emit(record: dict, json_path: Path | None) -> None:
    """The mode's record as one JSON line on stdout (the bench reads the last), and in `json_path`."""
    line = json.dumps(record)
    print(line, flush=True)
    if json_path is not None:
        json_path.write_text(line + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
