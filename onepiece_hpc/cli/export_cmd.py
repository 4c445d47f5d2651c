"""`onepiece export`: PNG files and a manifest from an output file."""

from __future__ import annotations

from pathlib import Path

import click

from onepiece_hpc.store.export import MANIFEST, export_images


@click.command("export")
@click.argument("output", type=click.Path(path_type=Path))
@click.argument("folder", type=click.Path(path_type=Path))
def export_cmd(output: Path, folder: Path) -> None:
    """Write one PNG per done item of OUTPUT into FOLDER (new or empty), plus FOLDER/manifest.jsonl."""
    count = export_images(output, folder)
    click.echo(f"exported {count} images to {folder} (index in {folder / MANIFEST})")
