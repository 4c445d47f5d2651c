"""Export done items as PNG files plus a manifest, without touching anything that exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from onepiece_hpc.errors import UserError
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.reader import item_records, open_output, output_dataset

MANIFEST = "manifest.jsonl"


def _check_target(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder; fix: give a new folder to export into")
    if folder.is_dir() and any(folder.iterdir()):
        raise UserError(f"{folder} is not empty; export never overwrites files; "
                        "fix: give a new or empty folder")


def export_images(output: Path, folder: Path) -> int:
    """Write one PNG per done item and DIR/manifest.jsonl; returns how many were written."""
    with open_output(output) as file:
        kind = file.attrs["output_kind"]
        if kind != "image":
            raise UserError(f"{output} holds {kind} outputs; this version exports images only")
        _check_target(folder)
        done = np.flatnonzero(file[s.DONE][...])
        images = output_dataset(file)
        width = max(6, len(str(images.shape[0] - 1)))
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / MANIFEST, "x", encoding="utf-8") as manifest:
            for record in item_records(file, done):
                name = f"{record.index:0{width}d}.png"
                Image.fromarray(images[record.index]).save(folder / name, format="PNG")
                manifest.write(json.dumps({
                    "index": record.index, "key": record.key, "prompt": record.prompt,
                    "negative_prompt": record.negative_prompt, "seed": record.seed, "steps": record.steps,
                    "guidance": record.guidance, "file": name,
                }, ensure_ascii=False) + "\n")
    return len(done)
