"""`onepiece bench pipeline`: staged against data-parallel (and, on GPUs, both against the plain
diffusers loop), same items and machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from onepiece_hpc import environment
from onepiece_hpc.runtime.options import click_option
from onepiece_hpc.runtime.policy.model import POLICIES


def _table(result: dict) -> str:
    rows = [("", "staged", "data-parallel", "staged/dp")]
    s, d, r = result["staged"], result["data_parallel"], result["ratios"]
    rows.append(("items/s", f"{s['items_per_s']:.2f}", f"{d['items_per_s']:.2f}", f"{r['throughput']:.2f}x"))
    rows.append(("seconds", f"{s['seconds']:.2f}", f"{d['seconds']:.2f}", ""))
    rows.append(("busy share", f"{s['busy_share']:.0%}", f"{d['busy_share']:.0%}", f"{r['busy_share']:.2f}x"))
    rows.append(("moving share", f"{s['moving_share']:.1%}", f"{d['moving_share']:.1%}", ""))
    rows.append(("idle share", f"{s['idle_share']:.0%}", f"{d['idle_share']:.0%}", ""))
    rows.append(("peak MiB/rank (max)", f"{s['peak_memory_mb_max']:.0f}", f"{d['peak_memory_mb_max']:.0f}",
                 f"{r['peak_memory_max']:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    return "\n".join([f"{result['job']}: {s['items']} items on {result['ranks']} ranks", *lines])


@click.command("pipeline")
@click.argument("job_file", type=click.Path(path_type=Path), default=Path("jobs/bench.yaml"))
@click.option("-n", "--ranks", type=click.IntRange(4), default=5, show_default=True, help="MPI ranks for both runs.")
@click.option("--fabric", type=click.Choice(["auto", "shm", "mpi-rma"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: the plain diffusers loop, data-parallel, staged adaptive and static on --gpus GPUs, "
                   "plus the floor, all against the plain loop.")
@click.option("--gpus", type=click.IntRange(1), default=None, help="GPUs to use (cuda; default: all visible).")
@click.option("--stage-ranks", default="auto", show_default=True, metavar="N,N,...|auto",
              help="Stage ranks for the staged runs (cuda), one number a stage of the job's model in its order "
                   "(e.g. 1,2,1 for encode,denoise,decode); auto: the layout that the stage profile says "
                   "balances the GPUs best within their memory.")
@click.option("--items", type=click.IntRange(1), default=None,
              help="Run on the job's first N prompts (cuda; default: all).")
@click.option("--repeats", type=click.IntRange(1), default=2, show_default=True,
              help="Timed runs per stage and batch size in the profile, after one warm-up (cuda).")
@click_option("gpu_memory_gib", help="Cap every GPU at this many GiB (cuda; ranks sharing a GPU split it).")
@click.option("--memory-split", type=click.Choice(["need", "even"]), default="need", show_default=True,
              help="How ranks sharing a GPU split its memory in the staged runs (cuda): by each stage's peak in "
                   "the profile (--stage-memory), or evenly.")
@click.option("--mps", is_flag=True,
              help="Run each staged configuration once more under NVIDIA MPS (onepiece run --mps), in the same "
                   "call (cuda).")
@click.option("--offload", multiple=True, metavar="STAGE",
              help="A stage of the job's model (e.g. encode, denoise or decode) that the data-parallel baseline "
                   "keeps on the host between units (cuda); repeatable.")
@click.option("--batches", default="1,2,4", show_default=True,
              help="Batch sizes the stage profile and the plain loop try (cuda).")
@click.option("--policies", default="adaptive,static", show_default=True, help="Staged policies to run (cuda).")
@click.option("--results", type=click.Path(path_type=Path), default=Path("bench/results"), show_default=True,
              help="Folder for the JSON record of a cuda run.")
def bench_pipeline_cmd(job_file: Path, ranks: int, fabric: str, as_json: bool, device: str, gpus: int | None,
                       stage_ranks: str | None, gpu_memory_gib: float | None, offload: tuple[str, ...],
                       batches: str, policies: str, results: Path, items: int | None, repeats: int,
                       memory_split: str, mps: bool) -> None:
    """Staged runtime vs. monolithic data-parallel (every rank runs the whole pipeline on its share).

    On CPU: throughput, busy/moving/idle share of the allocated rank time, and peak memory per
    rank, as ratios measured in this one run. On GPUs (--device cuda): GPU-seconds per output,
    outputs per hour, pipeline efficiency and peak memory per rank for the plain diffusers loop
    (the pipeline's own call, one process a GPU, outputs written as uint8 .npy files), data-parallel,
    staged adaptive and staged static, each at its best batch size, as ratios to the plain loop and
    to the floor (the sum of the per-stage service times at their best batch sizes), and each
    stage's time against its share of the plain call; the record is kept under --results.
    """
    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries()
    if device == "cuda":
        _bench_gpu(job_file, gpus, stage_ranks, gpu_memory_gib, offload, batches, policies, results, as_json, items,
                   repeats, memory_split, mps)
        return
    from onepiece_hpc.bench.pipeline import bench_pipeline
    from onepiece_hpc.planning.layout import plan_layout
    from onepiece_hpc.runtime.options import RunOptions
    from onepiece_hpc.runtime.prepare import prepare

    prepared = prepare(job_file, None, environment.cache_dir())
    plan_layout(prepared.job, ranks, prepared.model.adapter.topology)
    result = bench_pipeline(RunOptions(job=job_file, ranks=ranks, fabric=fabric), as_root=os.geteuid() == 0)
    click.echo(json.dumps(result, indent=2) if as_json else _table(result))


def _bench_gpu(job_file: Path, gpus: int | None, stage_ranks: str | None, gpu_memory_gib: float | None,
               offload: tuple[str, ...], batches: str, policies: str, results: Path, as_json: bool,
               items: int | None, repeats: int, memory_split: str, mps: bool) -> None:
    import sys

    import torch

    from onepiece_hpc.bench.gpu_layout import parse_offload, parse_stage_ranks
    from onepiece_hpc.bench.pipeline_gpu import GpuBench, bench_pipeline_gpu, results_path, table
    from onepiece_hpc.errors import UserError
    from onepiece_hpc.jobfile.loader import load_job
    from onepiece_hpc.models.topologies import topology_of

    problems: list[str] = []
    job = load_job(job_file, problems)
    if job is None:  # the job's own mistakes first, with their lines
        raise UserError(problems, headline=f"{job_file}: the job file has {len(problems)} problem(s):")
    stages = topology_of(job.model).names
    layout = parse_stage_ranks(stage_ranks, stages)
    offloaded = parse_offload(offload, stages)
    try:
        sizes = tuple(int(b) for b in batches.split(","))
    except ValueError:
        raise UserError(f"--batches {batches!r}: write whole numbers separated by commas, e.g. 1,2,4") from None
    chosen = tuple(p.strip() for p in policies.split(",") if p.strip())
    if not chosen or any(p not in POLICIES for p in chosen):
        raise UserError(f"--policies {policies!r}: write {', '.join(POLICIES)} or both")
    if not torch.cuda.is_available():
        raise UserError("--device cuda: no GPU is visible here; fix: run on a GPU node, or use --device cpu")
    visible = torch.cuda.device_count()
    gpus = gpus or visible
    if gpus > visible:
        raise UserError(f"--gpus {gpus}: only {visible} GPUs are visible here")
    bench = GpuBench(job=job_file, stages=stages, gpus=gpus, stage_ranks=layout, gpu_memory_gib=gpu_memory_gib,
                     offload=offloaded, batches=sizes, policies=chosen, as_root=os.geteuid() == 0, items=items,
                     repeats=repeats, memory_split=memory_split, mps=mps)
    results.mkdir(parents=True, exist_ok=True)

    def keep(record: dict) -> None:
        results_path(results, record).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")

    record = bench_pipeline_gpu(bench, ["onepiece", "bench", "pipeline", *sys.argv[3:]], keep)
    path = results_path(results, record)
    click.echo(json.dumps(record, indent=2) if as_json else table(record))
    click.echo(f"record kept in {path}", err=True)
