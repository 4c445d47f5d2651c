"""`onepiece bench writer`: can one writer on rank 0 keep up with 8 decode ranks?"""

from __future__ import annotations

import json
from pathlib import Path

import click

from onepiece_hpc import environment

CASES = ("image-512", "image-1024", "video-81x480x832")  # as in bench/writer.py


@click.command("writer")
@click.argument("job_file", type=click.Path(path_type=Path), default=Path("jobs/bench.yaml"))
@click.option("--dir", "folder", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where to write the test files (default: beside the job's output); use your output filesystem.")
@click.option("--case", "cases", multiple=True, type=click.Choice(list(CASES)), help="Item sizes (default: all).")
@click.option("--mb", "megabytes", type=click.IntRange(1, 1_000_000), default=2048, show_default=True,
              help="Megabytes of items each case commits.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per case.")
def bench_writer_cmd(job_file: Path, folder: Path | None, cases: tuple[str, ...], megabytes: int,
                     as_json: bool) -> None:
    """Commit rate of the rank-0 writer (synced to stable storage) vs. a durable plain write of the same
    bytes, and vs. what 8 decode ranks on H100s produce (DESIGN.md reference figures)."""
    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries()
    from onepiece_hpc.bench.writer import bench_writer
    from onepiece_hpc.runtime.prepare import prepare

    prepared = prepare(job_file, None, environment.cache_dir())
    target = folder or prepared.output.parent
    target.mkdir(parents=True, exist_ok=True)
    records = bench_writer(prepared, target, list(cases or CASES), megabytes * 2**20)
    if as_json:
        for record in records:
            click.echo(json.dumps(record))
        return
    click.echo(f"{'case':<18} {'MB/item':>8} {'commits/s':>10} {'MB/s':>8} {'plain MB/s':>11} "
               f"{'vs plain':>9} {'8-decoder demand/s':>19} {'headroom':>9}")
    for r in records:
        click.echo(f"{r['case']:<18} {r['item_bytes'] / 1e6:>8.2f} {r['commits_per_s']:>10.1f} {r['mb_per_s']:>8.0f} "
                   f"{r['plain_write_mb_per_s']:>11.0f} {r['ratio_to_plain_write']:>8.2f}x "
                   f"{r['demand_8_decoders_per_s']:>19.1f} {r['headroom']:>8.1f}x")
