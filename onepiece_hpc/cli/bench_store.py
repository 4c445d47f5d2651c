"""`onepiece bench store`: how creating, filling and reading an output scale with the item count."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click


@click.command("store")
@click.option("--items", "counts", multiple=True, type=click.IntRange(1, 10**9),
              help="Item counts to measure (default: 100000 and 1000000; add --items 10000000 for the full table).")
@click.option("--dir", "folder", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              help="Where to write the outputs (use the file system your outputs live on).")
@click.option("--size", type=click.IntRange(1, 4096), default=8, help="Items are SIZE x SIZE x 3 bytes (default 8).")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per item count.")
def bench_store(counts: tuple[int, ...], folder: Path, size: int, as_json: bool) -> None:
    """Create an output of N synthetic items, commit them all, then inspect and verify it; time and peak memory
    of each step in its own process."""
    from onepiece_hpc.bench.store_scale import bench_scale

    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".bench-store-", dir=folder))
    try:
        records = bench_scale(scratch, list(counts or (100_000, 1_000_000)), (size, size, 3))
    finally:
        shutil.rmtree(scratch)
    if as_json:
        for record in records:
            click.echo(json.dumps(record))
        return
    click.echo(f"{'items':>10} {'create s':>9} {'1st commit s':>12} {'fill s':>8} {'fill MB':>8} {'inspect s':>10} "
               f"{'inspect MB':>11} {'verify s':>9} {'verify MB':>10} {'files':>6} {'on disk GB':>11} {'index KB':>9}")
    for r in records:
        click.echo(f"{r['items']:>10} {r['create_s']:>9.2f} {r['first_commit_s']:>12.2f} {r['fill_s']:>8.1f} "
                   f"{r['fill_peak_mb']:>8.0f} {r['inspect_s']:>10.2f} {r['inspect_peak_mb']:>11.0f} "
                   f"{r['verify_s']:>9.1f} {r['verify_peak_mb']:>10.0f} {r['data_files']:>6} "
                   f"{r['on_disk_gb']:>11.2f} {r['index_kb']:>9.1f}")
