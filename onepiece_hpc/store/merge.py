"""One output file over many (a sweep's shards): HDF5 virtual datasets, no image copied.

The merged file is an ordinary output to `inspect` and `export`: its item i is item
i - offset(s) of shard s, shards in the order given. The per-item datasets that grow while a
run commits (/done, /outputs/*, /timings, /committed_at) are virtual: they read the shards'
own bytes, so a merge made while shards still run shows their progress, and a missing shard
file reads as not done. /items (whose `index` and `unit` must become global), /runs and
/merge/* (where each item comes from) are small tables, written out. Source paths are stored
relative to the merged file, so the folder can move as a whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc import __version__
from onepiece_hpc.errors import UserError
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.reader import open_output

VIRTUAL = (s.DONE, s.TIMINGS, s.COMMITTED_AT)
COMMON_ATTRS = ("model_identity", "model_ref", "microbatch", "execution")
KEPT_ATTRS = ("output_kind", "frame_rate")  # the merged file takes them from the first source


@dataclass(frozen=True)
class Source:
    path: Path
    items: int
    fingerprint: str
    attrs: dict
    output_name: str
    output_shape: tuple[int, ...]
    output_dtype: np.dtype
    timing_stages: tuple
    item_rows: np.ndarray
    runs: np.ndarray


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_source(path: Path) -> Source:
    with open_output(path) as file:
        kind = _text(file.attrs["output_kind"])
        name = s.OUTPUT_DATASETS[kind]
        images = file[s.OUTPUTS][name]
        return Source(
            path=path, items=int(file.attrs["items_total"]), fingerprint=_text(file.attrs["job_fingerprint"]),
            attrs={k: file.attrs[k] for k in (*COMMON_ATTRS, *KEPT_ATTRS) if k in file.attrs},
            output_name=name, output_shape=images.shape, output_dtype=images.dtype,
            timing_stages=tuple(file[s.TIMINGS].attrs["stages"]), item_rows=s.current_items(file[s.ITEMS][...]),
            runs=file[s.RUNS][...],
        )


def find_sources(paths: list[Path], target: Path) -> list[Path]:
    """The files to merge: given files as they are, folders as their *.h5 files (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.glob("*.h5") if p.resolve() != target.resolve())
        else:
            found.append(path)
    if not found:
        raise UserError(f"nothing to merge in {', '.join(map(str, paths))}; fix: give output files or the "
                        "folder that holds a sweep's NNNNN.h5 files")
    return found


def _check(sources: list[Source]) -> None:
    shapes: dict[tuple, list[str]] = {}
    for src in sources:
        shapes.setdefault((src.output_name, src.output_shape[1:], str(src.output_dtype)), []).append(src.path.name)
    if len(shapes) > 1:
        groups = "; ".join(f"{name} {'x'.join(map(str, shape))} {dtype}: {', '.join(files[:4])}"
                           f"{' ...' if len(files) > 4 else ''}" for (name, shape, dtype), files in shapes.items())
        raise UserError(f"the outputs hold items of different shapes, which one dataset can't hold ({groups}); "
                        "fix: merge each group into its own file")
    seen: dict[str, Path] = {}
    for src in sources:
        if src.fingerprint in seen:
            raise UserError(f"{src.path} and {seen[src.fingerprint]} are outputs of the same job; merging both "
                            "would list its items twice; fix: give each output once")
        seen[src.fingerprint] = src.path


def _common(sources: list[Source], name: str, mixed):
    values = {(_text(src.attrs[name]) if name != "microbatch" else int(src.attrs[name])) for src in sources}
    return values.pop() if len(values) == 1 else mixed


def _virtual(file: h5py.File, name: str, sources: list[Source], target_dir: Path, path_in_source: str,
             shape_of, dtype, fill) -> None:
    total = sum(src.items for src in sources)
    layout = h5py.VirtualLayout(shape=(total, *shape_of(sources[0])[1:]), dtype=dtype)
    start = 0
    for src in sources:
        relative = os.path.relpath(src.path.resolve(), target_dir)
        layout[start:start + src.items] = h5py.VirtualSource(relative, path_in_source, shape=shape_of(src))
        start += src.items
    file.create_virtual_dataset(name, layout, fillvalue=fill)


def _items(sources: list[Source]) -> np.ndarray:
    rows, offset, unit_offset = [], 0, 0
    for src in sources:
        part = src.item_rows.copy()
        part["index"] += offset
        part["unit"] += unit_offset
        rows.append(part)
        offset += src.items
        unit_offset += int(src.item_rows["unit"].max()) + 1 if len(src.item_rows) else 0
    return np.concatenate(rows)


def merge_outputs(paths: list[Path], target: Path) -> dict:
    """Write `target` as one view over the outputs in `paths`; returns what it holds."""
    target = target.absolute()
    if target.exists():
        raise UserError(f"{target} exists; merge never overwrites a file; fix: give a new file name "
                        "(or remove the old merge: it holds no images of its own)")
    if target.suffix.lower() not in (".h5", ".hdf5"):
        raise UserError(f"{target}: a merged output must end in .h5 or .hdf5")
    sources = [_read_source(p.absolute()) for p in find_sources(paths, target)]
    _check(sources)
    target.parent.mkdir(parents=True, exist_ok=True)
    total = sum(src.items for src in sources)
    fingerprint = hashlib.sha256("\n".join(src.fingerprint for src in sources).encode()).hexdigest()
    tmp = target.with_name(f".{target.name}.merging")
    first = sources[0]
    with h5py.File(tmp, "w") as file:
        file.attrs.update({
            "format": s.FORMAT, "format_version": s.FORMAT_VERSION, "job_name": target.stem,
            "job_fingerprint": fingerprint, "items_total": total, "output_kind": _text(first.attrs["output_kind"]),
            "model_identity": _common(sources, "model_identity", "mixed: see /merge/sources"),
            "model_ref": _common(sources, "model_ref", "mixed: see /merge/sources"),
            "microbatch": _common(sources, "microbatch", 0),
            "execution": _common(sources, "execution", "mixed: see /merge/sources"),
        })
        if "frame_rate" in first.attrs:
            file.attrs["frame_rate"] = first.attrs["frame_rate"]
        items = _items(sources)
        file.create_dataset(s.ITEMS, shape=items.shape, dtype=s.ITEM_DTYPE)[...] = items
        here = target.parent
        outputs = file.create_group(s.OUTPUTS)
        _virtual(outputs, first.output_name, sources, here, f"{s.OUTPUTS}/{first.output_name}",
                 lambda src: src.output_shape, first.output_dtype, 0)
        _virtual(file, s.DONE, sources, here, s.DONE, lambda src: (src.items,), np.uint8, 0)
        _virtual(file, s.TIMINGS, sources, here, s.TIMINGS, lambda src: (src.items, len(src.timing_stages)),
                 np.float64, np.nan)
        file[s.TIMINGS].attrs["stages"] = list(first.timing_stages)
        _virtual(file, s.COMMITTED_AT, sources, here, s.COMMITTED_AT, lambda src: (src.items,), np.float64, np.nan)
        runs = np.concatenate([src.runs for src in sources])
        file.create_dataset(s.RUNS, shape=runs.shape, dtype=s.RUN_DTYPE)[...] = runs
        merge = file.create_group("merge")
        merge.create_dataset("sources", data=[os.path.relpath(src.path, here) for src in sources],
                             dtype=h5py.string_dtype("utf-8"))
        merge.create_dataset("offsets", data=np.cumsum([0] + [src.items for src in sources[:-1]]).astype("<i8"))
        merge.create_dataset("counts", data=np.array([src.items for src in sources], dtype="<i8"))
        provenance = file.create_group(s.PROVENANCE)
        provenance.attrs.update({
            "package_version": __version__, "host": socket.gethostname(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model_ref": _common(sources, "model_ref", "mixed: see /merge/sources"),
            "merged_from": json.dumps([os.path.relpath(src.path, here) for src in sources]),
        })
    os.replace(tmp, target)
    return {"file": str(target), "sources": len(sources), "items_total": total}
