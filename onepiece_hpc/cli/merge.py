"""`onepiece merge`: one output file over many, through HDF5 virtual datasets."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="The merged file (default: FOLDER/merged.h5 for one folder).")
def merge(sources: tuple[Path, ...], output: Path | None) -> None:
    """Merge SOURCES (output files, or a sweep's folder) into one output that inspect and export read.

    No output is copied: the merged file points into the sources, so keep them beside it. Items
    are numbered in the order of the sources (a folder's files sorted by name; merged views in a
    folder are skipped). Sources of one job, or that share items, are refused.
    """
    from onepiece_hpc.errors import UserError
    from onepiece_hpc.store.merge import merge_outputs

    if output is None:
        if len(sources) != 1 or not sources[0].is_dir():
            raise UserError("say where the merged file goes: -o MERGED.h5 (only a single folder has a default)")
        output = sources[0] / "merged.h5"
    result = merge_outputs(list(sources), output)
    click.echo(f"{result.file}: {result.items_total} items from {result.sources} outputs "
               "(a view: keep the sources beside it)")
    if result.unchecked:
        click.echo(f"note: {result.unchecked} items of sources still running were not checked for duplicates yet; "
                   f"`onepiece verify {result.file}` checks them once they are written", err=True)
