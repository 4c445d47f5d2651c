"""Reading HDF5 files that may be damaged, truncated or not ours: every failure becomes a
UserError naming the file and what is wrong (and never a traceback), and an index's attributes
are checked before anything is sized from them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.index import MAX_FILES, ItemDataset, StoreLayout

#: what an extra dataset's name may be: STEP/images or STEP/videos under /outputs
EXTRA_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}/(images|videos)")

HDF5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)


def text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def damaged_error(path: Path, what: str, fix: str | None = None) -> UserError:
    return UserError(f"{path} is damaged: {what}; fix: {fix or 'restore it from a copy, or move it away and run the job again to regenerate what it held'}")


def open_hdf5(path: Path, role: str = "output") -> h5py.File:
    """Open an HDF5 file read-only, or raise UserError saying what it is instead."""
    if not path.exists():
        raise UserError(f"{path}: no such file; fix: give the path of an {role} (.h5) file")
    if path.is_dir():
        raise UserError(f"{path} is a folder; fix: give the path of an {role} (.h5) file")
    try:
        if not h5py.is_hdf5(path):
            raise UserError(f"{path} is not an HDF5 file (or its header is damaged); fix: give the path of an "
                            f"{role} (.h5) file")
        return h5py.File(path, "r", locking=False)
    except UserError:
        raise
    except HDF5_ERRORS as err:
        raise damaged_error(path, f"HDF5 can't open it ({short(err)})") from None


def short(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:300]


def read_dataset(file: h5py.File, name: str, path: Path, selection=()):
    """Read `name`, or raise UserError naming the file and the dataset that can't be read."""
    try:
        return file[name][selection]
    except HDF5_ERRORS as err:
        raise damaged_error(path, f"/{name} can't be read ({short(err)})") from None


def attrs_of(file: h5py.File, path: Path, names: tuple[str, ...] | None = None) -> dict:
    """The file's attributes (only `names`, those of them it has, if given: HDF5 takes tens of microseconds an
    attribute, which a merged view of thousands of sources pays for each)."""
    try:
        found = dict(file.attrs.items()) if names is None else _some_attrs(file, names)
        return {k: (text(v) if isinstance(v, (bytes, str)) else v) for k, v in found.items()}
    except HDF5_ERRORS as err:
        raise damaged_error(path, f"its attributes can't be read ({short(err)})") from None


def _some_attrs(file: h5py.File, names: tuple[str, ...]) -> dict:
    found, attrs = {}, file.attrs  # h5py makes a new attribute manager on each `file.attrs`
    for name in names:
        try:
            found[name] = attrs[name]
        except KeyError:
            pass  # absent: whoever needs it says so
    return found


def timing_columns(attrs: dict) -> tuple[str, ...]:
    """The timing columns an index names: each stage of its pipeline, then the write (an index
    made before they were written names none: the classic stages)."""
    if "timing_columns" not in attrs:
        return s.TIMING_STAGES
    return tuple(x.decode() if isinstance(x, bytes) else str(x) for x in np.ravel(attrs["timing_columns"]))


def _shape_problem(kind: str, shape: tuple[int, ...]) -> str | None:
    """Why `shape` can't be one item of `kind` (an image H x W x 3, a video T x H x W x 3), or None."""
    wanted = 3 if kind == "image" else 4
    return None if len(shape) == wanted and min(shape, default=0) >= 1 else f"item shape {shape}"


def extra_outputs(path: Path, attrs: dict) -> tuple[ItemDataset, ...]:
    """The datasets an index lists beside its outputs (schema.EXTRA_OUTPUTS), checked as far as the
    attribute can say: none if it lists none, else a UserError naming the damage."""
    raw = attrs.get(s.EXTRA_OUTPUTS)
    if raw is None:
        return ()
    try:
        found = tuple(ItemDataset(str(entry["name"]), str(entry["kind"]), tuple(int(x) for x in entry["item_shape"]))
                      for entry in json.loads(text(raw)))
    except (ValueError, TypeError, KeyError, OverflowError) as err:
        raise damaged_error(path, f"its list of extra datasets can't be read ({short(err)})") from None
    problems = []
    for dataset in found:
        if dataset.kind not in s.OUTPUT_DATASETS or not EXTRA_NAME.fullmatch(dataset.name) \
                or not dataset.name.endswith("/" + s.OUTPUT_DATASETS[dataset.kind]):
            problems.append(f"extra dataset {dataset.name!r} of kind {dataset.kind!r}")
        elif (shape := _shape_problem(dataset.kind, dataset.item_shape)) is not None:
            problems.append(f"extra dataset {dataset.name}: {shape}")
    if len({d.name for d in found}) != len(found) or not found:
        problems.append(f"extra datasets {[d.name for d in found]}")
    if problems:
        raise damaged_error(path, f"its attributes can't describe an output ({'; '.join(problems)})")
    return found


def checked_layout(path: Path, attrs: dict, per_file: bool = True) -> StoreLayout:
    """The layout an index's attributes describe, or UserError if they can't be one (a flipped bit: HDF5 keeps
    no checksum of them)."""
    try:
        total = int(attrs["items_total"])
        layout = StoreLayout(total, int(attrs["items_per_file"]) if per_file else max(1, total),
                             str(attrs["output_kind"]), tuple(int(x) for x in np.ravel(attrs["item_shape"])),
                             timing_columns(attrs), extra_outputs(path, attrs))
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise damaged_error(path, f"its layout attributes can't be read ({short(err)})") from None
    problems = []
    if not (0 <= layout.items_total and 1 <= layout.items_per_file <= max(1, layout.items_total)
            and layout.files <= MAX_FILES):
        problems.append(f"{layout.items_total} items, {layout.items_per_file} a file")
    if per_file and "files" in attrs and int_or_none(attrs["files"]) != layout.files:
        problems.append(f"{attrs['files']} data files where {layout.files} hold its items")
    if layout.output_kind not in s.OUTPUT_DATASETS:
        problems.append(f"output kind {layout.output_kind!r}")
    elif (shape := _shape_problem(layout.output_kind, layout.item_shape)) is not None:
        problems.append(shape)
    if per_file and not (isinstance(attrs.get("store_id"), str) and attrs["store_id"]):
        problems.append(f"store id {attrs.get('store_id')!r}")
    if problems:
        raise damaged_error(path, f"its attributes can't describe an output ({'; '.join(problems)})")
    return layout


def int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def read_shape(file: h5py.File, name: str, path: Path) -> tuple[int, ...]:
    try:
        return tuple(file[name].shape)
    except HDF5_ERRORS as err:
        raise damaged_error(path, f"/{name} can't be read ({short(err)})") from None
