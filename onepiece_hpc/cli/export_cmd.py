"""`onepiece export`: viewable files (PNG images; MP4 or GIF videos) and a manifest from an output file."""

from __future__ import annotations

from pathlib import Path

import click

from onepiece_hpc.store.export import MANIFEST, export_items


@click.command("export")
@click.argument("output", type=click.Path(path_type=Path))
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--format", "requested", type=click.Choice(["png", "mp4", "gif"]), default=None,
              help="File format: png for images (the only one); mp4 (default) or gif for videos.")
@click.option("--fps", type=click.IntRange(1, 240), default=None,
              help="Frames per second of exported videos (default: the model's, recorded in OUTPUT).")
def export_cmd(output: Path, folder: Path, requested: str | None, fps: int | None) -> None:
    """Write one file per done item of OUTPUT into FOLDER (new or empty), plus FOLDER/manifest.jsonl."""
    count, fmt = export_items(output, folder, requested, fps)
    click.echo(f"exported {count} {fmt.upper()} files to {folder} (index in {folder / MANIFEST})")
