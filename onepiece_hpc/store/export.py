"""Export done items as viewable files plus a manifest, without touching anything that exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.items import item_records
from onepiece_hpc.store.media import MP4_PIXELS, write_gif, write_mp4, write_png
from onepiece_hpc.store.reader import OutputView, open_output
from onepiece_hpc.store.safe_read import read_dataset

MANIFEST = "manifest.jsonl"
#: the formats each output kind exports to; the first is the default
FORMATS = {"image": ("png",), "video": ("mp4", "gif")}


def _check_target(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder; fix: give a new folder to export into")
    if folder.is_dir() and any(folder.iterdir()):
        raise UserError(f"{folder} is not empty; export never overwrites files; "
                        "fix: give a new or empty folder")


def _format(output: Path, kind: str, requested: str | None) -> str:
    formats = FORMATS[kind]
    if requested is None:
        return formats[0]
    if requested not in formats:
        raise UserError(f"{output} holds {kind}s, which export as {' or '.join(formats)}, not {requested}; "
                        f"fix: use --format {formats[0]}" + (f" or --format {formats[1]}" if len(formats) > 1 else ""))
    return requested


def _frame_rate(output: Path, attrs: dict, kind: str, fps: int | None) -> int | None:
    if kind == "image":
        if fps is not None:
            raise UserError(f"{output} holds images; --fps is for videos; fix: leave it out")
        return None
    fps = fps or attrs.get("frame_rate")
    if fps is None:
        raise UserError(f"{output} does not record its videos' frame rate; fix: give one with --fps N")
    return int(fps)


def export_items(output: Path, folder: Path, requested: str | None = None, fps: int | None = None) -> tuple[int, str]:
    """Write one file per done item and DIR/manifest.jsonl; returns how many were written, and the format.

    Images export as PNG; videos as MP4 (H.264, lossy; even sizes) or GIF (256 colours a frame).
    A workflow's kept step STEP exports beside each item as INDEX.STEP.png (or its video format).
    Data files are read one at a time, an item at a time.
    """
    with open_output(output) as view:
        kind = view.output_kind
        fmt = _format(output, kind, requested)
        fps = _frame_rate(output, view.attrs, kind, fps)
        targets = _targets(view, fmt)
        for dataset, shape, chosen, _ in targets:
            if chosen == "mp4" and (shape[1] % 2 or shape[2] % 2):
                raise UserError(f"{output}: the videos of /{dataset} are {shape[2]} x {shape[1]} px, and MP4 "
                                f"(H.264, {MP4_PIXELS}) needs even sizes; fix: use --format gif")
        _check_target(folder)
        width = max(6, len(str(view.items_total - 1)))
        made = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            written = _write_items(view, folder, targets, fps, width)
        except UserError:
            _undo(folder, made)  # damage found midway: leave no half export that blocks the next try
            raise
    return written, fmt


def _targets(view: OutputView, fmt: str) -> list[tuple[str, tuple[int, ...], str, str]]:
    """(dataset, item shape, format, step) of each file an item exports to: its output (step ""),
    then each kept step's, in the output's format where the kinds agree (else their kind's default)."""
    kept = [(d.path, d.item_shape, fmt if d.kind == view.output_kind else FORMATS[d.kind][0], d.name.split("/")[0])
            for d in view.extras]
    return [(view.dataset, view.item_shape, fmt, ""), *kept]


def _write_file(path: Path, pixels: np.ndarray, fmt: str, fps: int | None) -> None:
    if fmt == "png":
        write_png(path, pixels)
    elif fmt == "mp4":
        write_mp4(path, pixels, fps)
    else:
        write_gif(path, pixels, fps)


def _write_items(view: OutputView, folder: Path, targets: list, fps: int | None, width: int) -> int:
    """One file per done item (and kept step) and the manifest line that names them; returns how many items."""
    kind = view.output_kind
    written = 0
    with open(folder / MANIFEST, "x", encoding="utf-8") as manifest:
        for seg, file in view.each():
            if file is None:
                continue
            done = np.flatnonzero(read_dataset(file, s.DONE, seg.path))
            for local, record in zip(done, item_records(file, seg.path, done)):
                index = seg.start + int(local)
                names = {}
                for dataset, _, chosen, step in targets:
                    names[step] = f"{index:0{width}d}{'.' + step if step else ''}.{chosen}"
                    _write_file(folder / names[step], read_dataset(file, dataset, seg.path, np.s_[int(local)]),
                                chosen, fps)
                name = names.pop("")
                entry = {
                    "index": index, "key": record.key, "prompt": record.prompt,
                    "negative_prompt": record.negative_prompt, "seed": record.seed, "steps": record.steps,
                    "guidance": record.guidance, "file": name,
                }
                if kind == "video":
                    entry |= {"frames": record.frames, "fps": fps}
                if record.image:
                    entry["image"] = record.image
                if names:
                    entry["kept"] = names  # each kept step's file, by step
                manifest.write(json.dumps(entry, ensure_ascii=False) + "\n")
                written += 1
    return written


def _undo(folder: Path, made: bool) -> None:
    """Remove what an export that failed wrote into `folder` (new or empty when it began)."""
    for entry in folder.iterdir():
        if entry.is_file() and not entry.is_symlink():
            entry.unlink()
    if made:
        try:
            folder.rmdir()
        except OSError:
            pass
