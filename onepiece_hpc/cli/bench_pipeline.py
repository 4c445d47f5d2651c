"""`onepiece bench pipeline`: staged against data-parallel, same items, ranks and machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from onepiece_hpc import environment


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
def bench_pipeline_cmd(job_file: Path, ranks: int, fabric: str, as_json: bool) -> None:
    """Staged runtime vs. monolithic data-parallel (every rank runs the whole pipeline on its share).

    Reports throughput, busy/moving/idle share of the allocated rank time, and peak memory per
    rank, as ratios measured in this one run.
    """
    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries()
    from onepiece_hpc.runtime.bench_pipeline import bench_pipeline
    from onepiece_hpc.runtime.layout import plan_layout
    from onepiece_hpc.runtime.prepare import prepare

    prepared = prepare(job_file, None, environment.cache_dir())
    plan_layout(prepared.job, ranks)
    result = bench_pipeline(job_file, ranks, ["--fabric", fabric], as_root=os.geteuid() == 0)
    click.echo(json.dumps(result, indent=2) if as_json else _table(result))
