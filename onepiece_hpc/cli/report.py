"""`onepiece report`: a self-contained HTML report of an output."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("-o", "--output", "target", type=click.Path(path_type=Path), default=None,
              help="The report file (default: OUTPUT's name with .report.html, beside it).")
def report(output: Path, target: Path | None) -> None:
    """Write an HTML report of OUTPUT: progress, throughput, the ranks' timeline, the Node Manager's
    moves, stage use, memory, backlog, latency, failed items, thumbnails and provenance.

    OUTPUT may be finished, still being written (read as it is now), or a merged sweep. The file
    needs no network to view.
    """
    from onepiece_hpc.report.build import write_report

    click.echo(str(write_report(output, target)))
