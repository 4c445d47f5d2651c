"""One output over many (a sweep's shards): a merged view that copies no output.

A merged view is a small index of its own (kind "merged"): the sources it was made from, each
with its identity (store id, job fingerprint, item count), and virtual datasets over their data
files for users' own h5py code. Whenever it is opened, every source is opened and checked
against that record, so a missing, damaged or replaced source is an error naming it, never
"not done". Item i of the view is item i - offset(s) of source s, sources in the order given.

No item may appear twice: sources of the same job, a merged view given as a source, and items
with the same key in two sources are refused. Keys are read from the data files the sources
have created so far; a source still running is checked again by `onepiece verify`.
"""

from __future__ import annotations

import hashlib
import logging
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
from onepiece_hpc.store.files import AlreadyThere, write_new
from onepiece_hpc.store.index import ItemDataset, StoreLayout, layout_attrs, new_store_id, seal, write_views
from onepiece_hpc.store.reader import SOURCE_ATTRS, OutputView, Segment, view_of
from onepiece_hpc.store.safe_read import (
    HDF5_ERRORS,
    attrs_of,
    checked_layout,
    open_hdf5,
    timing_columns,
)

log = logging.getLogger(__name__)

SOURCE_DTYPE = np.dtype([("path", h5py.string_dtype("utf-8")), ("store_id", "S64"), ("fingerprint", "S64"),
                         ("items", "<i8"), ("offset", "<i8")])
COMMON_ATTRS = ("model_identity", "model_ref", "microbatch", "execution")


def identity(view: OutputView) -> str:
    """What tells one output from another that replaced it: its store id (format 3), else its fingerprint and
    creation time (format 2)."""
    store_id = str(view.attrs.get("store_id", ""))
    if store_id:
        return store_id
    made = f"{view.attrs.get('job_fingerprint')}:{view.provenance.get('created_at', '')}"
    return "v2-" + hashlib.sha256(made.encode()).hexdigest()[:61]  # 64 characters, as /merge/sources keeps


def is_merged(path: Path) -> bool:
    try:
        with open_hdf5(path) as file:
            return attrs_of(file, path).get("kind") == s.KIND_MERGED
    except UserError:
        return False


def find_sources(paths: list[Path], target: Path) -> list[Path]:
    """The files to merge: given files as they are, folders as their *.h5 outputs (sorted), never a
    merged view found in a folder."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for candidate in sorted(path.glob("*.h5")):
                if candidate.name.startswith(".") or candidate.resolve() == target.resolve():
                    continue
                if is_merged(candidate):
                    log.info("skipping %s: it is a merged view", candidate)
                    continue
                found.append(candidate)
        else:
            found.append(path)
    if not found:
        raise UserError(f"nothing to merge in {', '.join(map(str, paths))}; fix: give output files or the "
                        "folder that holds a sweep's NNNNN.h5 files")
    return found


def _check_shapes(views: list[OutputView]) -> None:
    shapes: dict[tuple, list[str]] = {}
    for view in views:
        key = (view.output_kind, view.item_shape, timing_columns(view.attrs), view.extras)
        shapes.setdefault(key, []).append(view.path.name)
    if len(shapes) > 1:
        groups = "; ".join(f"{kind}s {'x'.join(map(str, shape))}{_extras_text(extras)} from stages "
                           f"{' -> '.join(columns[:-1])}: {', '.join(files[:4])}{' ...' if len(files) > 4 else ''}"
                           for (kind, shape, columns, extras), files in shapes.items())
        raise UserError(f"the outputs hold items of different shapes, which one dataset can't hold ({groups}); "
                        "fix: merge each group into its own file")


def _extras_text(extras: tuple[ItemDataset, ...]) -> str:
    return "".join(f" with /{d.path} {'x'.join(map(str, d.item_shape))}" for d in extras)


def _check_distinct(views: list[OutputView]) -> None:
    seen: dict[str, Path] = {}
    for view in views:
        if view.kind == s.KIND_MERGED:
            raise UserError(f"{view.path} is a merged view; merging it again would list its items twice or "
                            "hide its sources; fix: merge its sources (or their folder) instead")
        fingerprint = str(view.attrs["job_fingerprint"])
        if fingerprint in seen:
            raise UserError(f"{view.path} and {seen[fingerprint]} are outputs of the same job; merging both "
                            "would list its items twice; fix: give each output once")
        seen[fingerprint] = view.path


def _key_prefixes(keys: np.ndarray) -> np.ndarray:
    """The first 16 hex digits of each S64 key as an unsigned 64-bit number."""
    raw = np.frombuffer(np.ascontiguousarray(keys).tobytes(), dtype=np.uint8).reshape(len(keys), -1)[:, :16]
    values = np.where(raw >= ord("a"), raw - ord("a") + 10, raw - ord("0")).astype(np.uint64)
    weights = np.uint64(16) ** np.arange(15, -1, -1, dtype=np.uint64)
    return (values * weights).sum(axis=1, dtype=np.uint64)


class KeyTable:
    """Item keys' first 64 bits and where each was found (12 bytes an item), to find an item listed twice."""

    def __init__(self) -> None:
        self._prefixes: list[np.ndarray] = []
        self._origins: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []

    def add(self, origin: int, first: int, keys: np.ndarray) -> None:
        """The keys of items first, first + 1, ... of source number `origin`."""
        self._prefixes.append(_key_prefixes(keys))
        self._origins.append(np.full(len(keys), origin, dtype=np.int32))
        self._positions.append(np.arange(first, first + len(keys), dtype=np.int64))

    def problems(self, sources: list[tuple[Path, list[Segment]]]) -> list[str]:
        """At most 5 items found twice, each named by its sources and positions."""
        if not self._prefixes:
            return []
        prefix, origin = np.concatenate(self._prefixes), np.concatenate(self._origins)
        position = np.concatenate(self._positions)
        order = np.argsort(prefix, kind="stable")
        same = np.flatnonzero(prefix[order][1:] == prefix[order][:-1])
        problems = []
        for at in same[:50]:
            a, b = order[at], order[at + 1]
            key_a, key_b = _key_at(sources[origin[a]][1], position[a]), _key_at(sources[origin[b]][1], position[b])
            if key_a == key_b:
                problems.append(f"item {position[a]} of {sources[origin[a]][0]} and item {position[b]} of "
                                f"{sources[origin[b]][0]} are the same item (key {key_a[:16]}...)")
        return problems[:5]


def duplicate_keys(sources: list[tuple[Path, list[Segment]]]) -> tuple[list[str], int]:
    """Problems for item keys found in two places (at most 5 named), and how many items could not be checked
    (in data files not created yet). `sources` are (output, its segments); items are numbered as in their own
    output."""
    table, unchecked = KeyTable(), 0
    for number, (_, segments) in enumerate(sources):
        for seg in segments:
            keys = _keys_of(seg)
            if keys is None:
                unchecked += seg.count
            else:
                table.add(number, seg.own_start, keys)
    return table.problems(sources), unchecked


def read_keys(file: h5py.File, path: Path, selection=()) -> np.ndarray:
    """Item keys (S64) of an open data file."""
    try:
        return np.asarray(file[s.ITEMS].fields("key")[selection], dtype="S64")
    except HDF5_ERRORS as err:
        raise UserError(f"{path} is damaged: /items can't be read ({err}); fix: restore it from a copy, "
                        "or move it away and run the job again to regenerate what it held") from None


def _keys_of(seg: Segment, selection=()) -> np.ndarray | None:
    """A segment's item keys (S64), None if its file was not created yet."""
    file = seg.open()
    if file is None:
        return None
    with file:
        return read_keys(file, seg.path, selection)


def _key_at(segments: list[Segment], item: int) -> str:
    for seg in segments:
        if seg.own_start <= item < seg.own_start + seg.count:
            keys = _keys_of(seg, np.s_[item - seg.own_start:item - seg.own_start + 1])
            return "" if keys is None else keys[0].decode("ascii", "replace")
    return ""


def _common(views: list[OutputView], name: str, mixed):
    values = {(str(v.attrs.get(name)) if name != "microbatch" else int(v.attrs.get(name, 0))) for v in views}
    return values.pop() if len(values) == 1 else mixed


@dataclass(frozen=True)
class MergeResult:
    file: str
    sources: int
    items_total: int
    unchecked: int  # items whose keys could not be checked yet (sources still running)


def merge_outputs(paths: list[Path], target: Path) -> MergeResult:
    """Write `target` as one view over the outputs in `paths`."""
    target = target.absolute()
    if target.exists() or target.is_symlink():
        raise UserError(f"{target} exists; merge never overwrites a file; fix: give a new file name "
                        "(or remove the old merge: it holds no outputs of its own)")
    if target.suffix.lower() not in (".h5", ".hdf5"):
        raise UserError(f"{target}: a merged output must end in .h5 or .hdf5")
    views = [view_of(p.absolute(), provenance=False) for p in find_sources(paths, target)]
    _check_distinct(views)
    _check_shapes(views)
    problems, unchecked = duplicate_keys([(view.path, view.segments) for view in views])
    if problems:
        raise UserError(problems, headline="the outputs share items, which a merge would list twice; nothing "
                        "was written; fix: merge outputs of disjoint prompts (or remove the duplicates' outputs):")
    here = target.parent
    here.mkdir(parents=True, exist_ok=True)
    total = sum(view.items_total for view in views)
    offsets = np.cumsum([0] + [view.items_total for view in views[:-1]]).astype(np.int64)
    first = views[0]
    layout = StoreLayout(total, max(1, total), first.output_kind, first.item_shape, timing_columns(first.attrs),
                         first.extras)
    fingerprint = hashlib.sha256("\n".join(str(v.attrs["job_fingerprint"]) for v in views).encode()).hexdigest()
    table = np.array([(os.path.relpath(v.path, here), identity(v).encode(), str(v.attrs["job_fingerprint"]).encode(),
                       v.items_total, off) for v, off in zip(views, offsets)], dtype=SOURCE_DTYPE)

    def fill(tmp: Path) -> None:
        with h5py.File(tmp, "w", locking=False) as file:
            file.attrs.update({
                "format": s.FORMAT, "kind": s.KIND_MERGED, **layout_attrs(layout),
                "store_id": new_store_id(), "job_name": target.stem, "job_fingerprint": fingerprint,
                "model_identity": _common(views, "model_identity", "mixed: see /merge/sources"),
                "model_ref": _common(views, "model_ref", "mixed: see /merge/sources"),
                "microbatch": _common(views, "microbatch", 0),
                "execution": _common(views, "execution", "mixed: see /merge/sources"),
            })
            if "frame_rate" in first.attrs:
                file.attrs["frame_rate"] = first.attrs["frame_rate"]
            file.create_group("merge").create_dataset("sources", data=table)
            ranges = [(os.path.relpath(seg.path, here), int(off) + seg.start, int(off) + seg.start + seg.count)
                      for view, off in zip(views, offsets) for seg in view.segments]
            write_views(file, ranges, layout)
            seal(file)
            file.create_group(s.PROVENANCE).attrs.update({
                "package_version": __version__, "host": socket.gethostname(),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "model_ref": _common(views, "model_ref", "mixed: see /merge/sources"),
            })

    try:
        write_new(target, fill)
    except AlreadyThere:
        raise UserError(f"{target} appeared while merging; merge never overwrites a file; fix: give a new "
                        "file name") from None
    return MergeResult(str(target), len(views), total, unchecked)


def expand_merged(path: Path, file: h5py.File, attrs: dict) -> OutputView:
    """A merged view's segments: each source opened and checked against what the merge recorded."""
    layout = checked_layout(path, attrs, per_file=False)
    try:
        table = file["merge"]["sources"][...]
        rows = [(_decoded(row["path"]), _decoded(row["store_id"]), _decoded(row["fingerprint"]), int(row["items"]),
                 int(row["offset"])) for row in table]
    except (*HDF5_ERRORS, IndexError, UnicodeError) as err:
        raise UserError(f"{path} is damaged: its list of sources can't be read ({err}); fix: merge again") from None
    if sum(row[3] for row in rows) != layout.items_total or [row[4] for row in rows] != list(
            np.cumsum([0] + [row[3] for row in rows[:-1]])):
        raise UserError(f"{path} is damaged: its list of sources does not add up to its {layout.items_total} items; "
                        "fix: merge again")
    segments, runs, telemetry, sources, warnings, failures = [], [], [], [], [], []
    for relative, store_id, fingerprint, items, offset in rows:
        source = (path.parent / relative).resolve()
        fix = f"put back {source} as it was, or merge again"
        if not source.exists():
            raise UserError(f"{path}: its source {source} is missing; nothing can say which of its items are "
                            f"done; fix: {fix}")
        try:
            view = view_of(source, provenance=False, attrs=SOURCE_ATTRS)
        except UserError as err:
            raise UserError(f"{path}: its source {source} can't be read, so neither can the merged view: "
                            f"{err.render()}") from None
        found = (identity(view), str(view.attrs["job_fingerprint"]), view.items_total, view.output_kind,
                 view.item_shape, view.extras)
        if found != (store_id, fingerprint, items, layout.output_kind, layout.item_shape, layout.extras):
            raise UserError(f"{path}: its source {source} was replaced since the merge (it now holds job "
                            f"'{view.attrs.get('job_name')}' with {view.items_total} items, another output than the "
                            f"one merged); its items would be mislabelled; fix: {fix}")
        segments += [seg.shifted(offset) for seg in view.segments]
        runs += [{**run, "source": relative} for run in view.runs]
        telemetry += view.telemetry_dirs
        sources.append({"path": relative, "items": view.items_total, "offset": offset})
        warnings += view.warnings
        failures += [failure.shifted(offset) for failure in view.failures]
    provenance = {}
    try:
        provenance = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in file[s.PROVENANCE].attrs.items()}
    except HDF5_ERRORS:
        pass
    return OutputView(path, s.KIND_MERGED, attrs, provenance, segments, runs, telemetry, sources, warnings, failures)


def _decoded(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
