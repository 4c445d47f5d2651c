"""`onepiece bench startup`: time to the first committed item and memory per rank, by prompt count."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click


@click.command("startup")
@click.option("--prompts", "counts", multiple=True, type=click.IntRange(1, 10**9),
              help="Prompt counts to measure (default: 100000, 1000000 and 10000000).")
@click.option("-n", "--ranks", type=click.IntRange(4, 64), default=4, show_default=True,
              help="Local ranks of the staged run (rank 0 and three stage ranks at least).")
@click.option("--microbatch", type=click.IntRange(1, 1024), default=1, show_default=True)
@click.option("--dir", "folder", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              help="Where to write the prompt files and outputs (they are removed afterwards).")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per prompt count.")
def bench_startup(counts: tuple[int, ...], ranks: int, microbatch: int, folder: Path, as_json: bool) -> None:
    """Launch a staged run of the built-in tiny model on N prompts and time it to its first committed
    item; report rank 0's and the largest stage rank's peak memory then, against the smallest N."""
    from onepiece_hpc.bench.startup import measure

    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".bench-startup-", dir=folder))
    records = []
    try:
        for count in sorted(counts or (100_000, 1_000_000, 10_000_000)):
            record = measure(scratch, count, ranks, microbatch)
            shutil.rmtree(record.pop("folder"))
            records.append(record)
            if as_json:
                click.echo(json.dumps(record))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if as_json:
        return
    base = records[0]
    click.echo(f"{'prompts':>10} {'ranks':>5} {'1st commit s':>12} {'x base':>7} {'rank 0 MB':>10} "
               f"{'stage rank MB':>14} {'x base':>7}")
    for r in records:
        click.echo(f"{r['prompts']:>10} {r['ranks']:>5} {r['first_commit_s']:>12.1f} "
                   f"{r['first_commit_s'] / base['first_commit_s']:>7.2f} {r['rank0_peak_mb']:>10.0f} "
                   f"{r['stage_peak_mb']:>14.0f} {r['stage_peak_mb'] / base['stage_peak_mb']:>7.2f}")
