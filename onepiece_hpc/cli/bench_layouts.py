"""`onepiece bench layouts RECORD.json ...`: the GPU layout model against measured records."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("layouts")
@click.argument("records", nargs=-1, required=True, type=click.Path(path_type=Path))
def bench_layouts(records: tuple[Path, ...]) -> None:
    """Hold the layout model (and its batch model of shared GPUs, fill and drain included) against
    records of `onepiece bench pipeline --device cuda`: each staged run's measured GPU-seconds per
    output beside the model's for the same layout and batch, then the layout the model chooses for
    that batch against data-parallel. Runs on any machine: it reads the records only."""
    from onepiece_hpc.bench.layout_check import render

    click.echo(render(list(records)))
