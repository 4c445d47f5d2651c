"""Reading outputs: one view over an output (index + data files), a format-2 file, or a merged
view, that streams segment by segment (one file open at a time, bounded memory) and turns
every kind of damage into a UserError naming the file and what is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.index import (
    ATTRS_DIGEST,
    ItemDataset,
    StoreLayout,
    attrs_digest,
    data_file_path,
)
from onepiece_hpc.store.integrity import clear_done_flags, damaged_items
from onepiece_hpc.store.journal import FailedUnit, JournalView, read_journal
from onepiece_hpc.store.safe_read import (
    HDF5_ERRORS,
    attrs_of,
    checked_layout,
    damaged_error,
    extra_outputs,
    int_or_none,
    open_hdf5,
    read_dataset,
    read_shape,
    short,
    text,
    timing_columns,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Segment:
    """A run of consecutive items that one file holds (a data file, or a whole format-2 file)."""

    path: Path
    start: int          # the first item's index in the view
    count: int
    own_start: int      # the first item's index in the output the file belongs to
    store_id: str       # what the file must say it belongs to; "" for a format-2 file
    created: bool       # the journal says it was made: if it is missing, that is damage
    has_digest: bool
    source: str         # the output it belongs to, for messages
    datasets: tuple[ItemDataset, ...]  # its per-item datasets (outputs first), each `count` items

    @property
    def dataset(self) -> str:
        """The outputs dataset."""
        return self.datasets[0].path

    def open(self) -> h5py.File | None:
        """The file, checked; None if it was never created (its items are not done)."""
        if not self.path.exists():
            if self.created:
                raise damaged_error(Path(self.source), f"its data file {self.path} is missing (it was created "
                                    "and held committed items)", "restore it, or run the job again: its items "
                                    "will be generated again")
            return None
        file = open_hdf5(self.path, "data")
        if self.store_id:
            try:  # only what is checked: reading every attribute costs as much as the rest of a small file
                attrs = file.attrs
                found = {name: attrs.get(name) for name in ("store_id", "start", "count")}
            except HDF5_ERRORS as err:
                file.close()
                raise damaged_error(self.path, f"its attributes can't be read ({short(err)})") from None
            if (found["store_id"], found["start"], found["count"]) != (self.store_id, self.own_start, self.count):
                file.close()
                raise damaged_error(self.path, f"it does not belong to {self.source} (it says store "
                                    f"{found.get('store_id')}, items from {found.get('start')}, {found.get('count')} "
                                    "of them)", "put back the right file, or move this one away")
        for dataset in self.datasets:
            try:
                shape = tuple(file[dataset.path].shape)
            except HDF5_ERRORS as err:
                file.close()
                raise damaged_error(self.path, f"/{dataset.path} can't be read ({short(err)})") from None
            if shape != (self.count, *dataset.item_shape):
                file.close()
                raise damaged_error(self.path, f"/{dataset.path} holds {' x '.join(map(str, shape))} where "
                                    f"{self.source} says {' x '.join(map(str, (self.count, *dataset.item_shape)))}")
        return file

    def shifted(self, offset: int) -> Segment:
        """The same segment inside a view whose items start `offset` earlier (a merged view)."""
        return replace(self, start=self.start + offset)


def _segment(path: Path, start: int, count: int, store_id: str, created: bool, has_digest: bool,
             source: Path, layout: StoreLayout) -> Segment:
    return Segment(path, start, count, start, store_id, created, has_digest, str(source), layout.datasets)


class OutputView:
    """An output as readers see it: attributes, segments, runs. Use `open_output`."""

    def __init__(self, path: Path, kind: str, attrs: dict, provenance: dict, segments: list[Segment],
                 runs: list[dict], telemetry_dirs: list[Path], sources: list[dict] | None = None,
                 warnings: list[str] | None = None, failures: list[FailedUnit] | None = None) -> None:
        self.path, self.kind, self.attrs, self.provenance = path, kind, attrs, provenance
        self.segments, self.runs, self.telemetry_dirs = segments, runs, telemetry_dirs
        self.sources = sources or []
        self.warnings = warnings or []  # damage that leaves every output readable (a journal's bad lines)
        self.failures = failures or []  # the journal's failed units, done or not (store/failed.py tells)

    @property
    def items_total(self) -> int:
        return int(self.attrs["items_total"])

    @property
    def output_kind(self) -> str:
        return str(self.attrs["output_kind"])

    @property
    def dataset(self) -> str:
        return f"{s.OUTPUTS}/{s.OUTPUT_DATASETS[self.output_kind]}"

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.attrs["item_shape"])

    @property
    def extras(self) -> tuple[ItemDataset, ...]:
        """The items' datasets beside their outputs (a workflow's kept steps), as the index lists them."""
        return extra_outputs(self.path, self.attrs)

    def each(self) -> Iterator[tuple[Segment, h5py.File | None]]:
        """Every segment with its open file (None: not created yet), one at a time."""
        for seg in self.segments:
            file = seg.open()
            try:
                yield seg, file
            finally:
                if file is not None:
                    file.close()

    def done_mask(self) -> np.ndarray:
        done = np.zeros(self.items_total, dtype=bool)
        for seg, file in self.each():
            if file is not None:
                done[seg.start:seg.start + seg.count] = read_dataset(file, s.DONE, seg.path).astype(bool)
        return done


# -- opening -----------------------------------------------------------------------------------------
def _format_version(attrs: dict, path: Path) -> int:
    if attrs.get("format") != s.FORMAT:
        raise UserError(f"{path} is an HDF5 file but not an onepiece output (no format attribute); fix: give the "
                        "path of an output that onepiece run (or merge) wrote")
    try:
        version = int(attrs.get("format_version", 0))
    except (TypeError, ValueError):
        raise damaged_error(path, f"its format_version {attrs.get('format_version')!r} is not a number") from None
    if version > s.FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer onepiece (format {version}); fix: upgrade onepiece to read it")
    return version


def _view_v3(path: Path, file: h5py.File, attrs: dict, provenance: bool, names: tuple[str, ...] | None) -> OutputView:
    missing = [a for a in s.INDEX_ATTRS if a not in attrs and (names is None or a in names)]
    if missing:
        raise damaged_error(path, f"its index lacks the attribute(s) {', '.join(missing)}")
    layout = checked_layout(path, attrs)
    folder = Path(s.data_folder(path))
    if not folder.is_dir():
        raise damaged_error(path, f"its data folder {folder} is missing", f"put {folder} back beside it (an output "
                            "is the index and that folder together)")
    journal, warnings = journal_of(path)
    for warning in warnings:
        log.warning("%s", warning)
    segments = [_segment(data_file_path(path, k), *_range(layout, k), str(attrs["store_id"]), k in journal.files,
                         True, path, layout) for k in range(layout.files)]
    return OutputView(path, s.KIND_OUTPUT, attrs, _provenance(file, path, provenance), segments,
                      journal.runs, [folder / s.TELEMETRY_DIR], warnings=warnings,
                      failures=list(journal.failures.values()))


def journal_of(path: Path) -> tuple[JournalView, list[str]]:
    """The journal of the output at `path`, its run records cleaned of values of the wrong type, and warnings for
    lines it had to skip. The outputs don't need it, but a journal that can't be read at all is damage."""
    journal_path = Path(s.data_folder(path)) / s.JOURNAL
    try:
        journal = read_journal(journal_path)
    except (OSError, UnicodeError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise damaged_error(journal_path, f"it can't be read ({short(err)})", "restore it from a copy, or remove "
                            "the lines that are not records onepiece wrote (it lists the runs and the data files "
                            "created; the outputs themselves don't need it)") from None
    journal.runs = [_clean_run(run) for run in journal.runs]
    warnings = []
    if journal.unreadable_lines:
        warnings.append(f"{journal_path}: {journal.unreadable_lines} line(s) are not records onepiece wrote and were "
                        "skipped (a run killed while writing one leaves its last line cut short); every output is "
                        "still read; fix: restore the journal from a copy to keep its run records")
    return journal, warnings


_RUN_DICTS = ("software", "hardware")
_RUN_TEXTS = ("started_at", "finished_at", "host", "mode", "status", "slurm_job", "execution")


def _clean_run(run: dict) -> dict:
    """A run record as readers and the writer expect it, whatever a damaged or edited journal holds."""
    clean = dict(run)
    for name in _RUN_DICTS:
        value = clean.get(name, {})
        clean[name] = ({str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {})
    for name in _RUN_TEXTS:
        if name in clean and not isinstance(clean[name], str):
            clean[name] = str(clean[name])
    for name in ("items_committed", "pid", "slurm_restart"):
        if name in clean and int_or_none(clean[name]) is None:
            clean[name] = 0
    return clean


def _range(layout: StoreLayout, index: int) -> tuple[int, int]:
    start, stop = layout.file_range(index)
    return start, stop - start


def layout_of(path: Path, attrs: dict) -> StoreLayout:
    return StoreLayout(int(attrs["items_total"]), int(attrs["items_per_file"]), str(attrs["output_kind"]),
                       tuple(int(x) for x in np.ravel(attrs["item_shape"])), timing_columns(attrs),
                       extra_outputs(path, attrs))



def _provenance(file: h5py.File, path: Path, read: bool = True) -> dict:
    """The /provenance attributes (only checked for, if not `read`)."""
    try:  # every version writes it: without it, a flipped bit in its name would pass for "no provenance"
        if s.PROVENANCE not in file:
            raise damaged_error(path, "its /provenance group is missing")
        if not read:
            return {}
        return {k: text(v) for k, v in file[s.PROVENANCE].attrs.items()}
    except HDF5_ERRORS as err:
        raise damaged_error(path, f"/provenance can't be read ({short(err)})") from None


def _view_v2(path: Path, file: h5py.File, attrs: dict) -> OutputView:
    missing = [f"attribute {a}" for a in s.V2_ATTRS if a not in attrs]
    try:
        missing += [f"dataset /{d}" for d in s.V2_DATASETS if d not in file]
    except HDF5_ERRORS as err:
        raise damaged_error(path, f"its groups can't be read ({short(err)})") from None
    if missing:
        raise damaged_error(path, f"missing {', '.join(missing)} (format {attrs.get('format_version')})")
    kind = str(attrs["output_kind"])
    if kind not in s.OUTPUT_DATASETS:
        raise damaged_error(path, f"its output kind {kind!r} is none of {', '.join(s.OUTPUT_DATASETS)}")
    shape = tuple(read_shape(file, f"{s.OUTPUTS}/{s.OUTPUT_DATASETS[kind]}", path)[1:])
    attrs = {**attrs, "item_shape": shape, "store_id": ""}
    layout = checked_layout(path, attrs, per_file=False)
    runs = [{name: (text(r[name]) if isinstance(r[name], (bytes, str)) else int(r[name]))
             for name in r.dtype.names} for r in read_dataset(file, s.RUNS, path)]
    segment = _segment(path, 0, layout.items_total, "", True, False, path, layout)
    return OutputView(path, "format-2", attrs, _provenance(file, path), [segment], runs, [])


def _view_merged(path: Path, file: h5py.File, attrs: dict) -> OutputView:
    from onepiece_hpc.store.merge import (
        expand_merged,  # a merged view is made of other views
    )

    return expand_merged(path, file, attrs)


#: what a merged view reads of each source: its identity and layout
SOURCE_ATTRS = ("format", "format_version", "kind", "store_id", "job_fingerprint", "job_name", "items_total",
                "items_per_file", "output_kind", "item_shape", "files", "timing_columns", s.EXTRA_OUTPUTS)


def view_of(path: Path, provenance: bool = True, attrs: tuple[str, ...] | None = None) -> OutputView:
    """Read what an output is made of (the files stay closed until their segment is read); a merge reads its
    sources without their provenance, and a merged view only their SOURCE_ATTRS."""
    path = Path(path)
    names = attrs
    with open_hdf5(path) as file:
        attrs = attrs_of(file, path, names)
        version = _format_version(attrs, path)
        if names is None and ATTRS_DIGEST in attrs and attrs_digest(attrs) != attrs[ATTRS_DIGEST]:
            raise damaged_error(path, "its attributes fail their digest (a changed bit in the job's identity or "
                                "layout)")
        if version <= 2:
            return _view_v2(path, file, attrs if names is None else attrs_of(file, path))
        if attrs.get("kind") == s.KIND_MERGED:
            return _view_merged(path, file, attrs)
        return _view_v3(path, file, attrs, provenance, names)


@contextmanager
def open_output(path: Path) -> Iterator[OutputView]:
    yield view_of(path)


# -- for the writer ------------------------------------------------------------------------------------
class StoreReader:
    """A format-3 output as its writer needs it: layout, done flags, data files, journal."""

    def __init__(self, view: OutputView, journal: JournalView) -> None:
        self.view = view
        self.path = view.path
        self.attrs = view.attrs
        self.layout = layout_of(view.path, view.attrs)
        self.journal = journal

    @classmethod
    def open_for_resume(cls, path: Path) -> StoreReader:
        view = view_of(path)
        if view.kind == "format-2":
            raise UserError(f"{path} was written by an earlier onepiece (format 2, one file); this version reads it "
                            "(inspect, export, verify, merge) but adds nothing to it; nothing was changed; fix: "
                            "finish it with the release that started it, or give this job a new output path")
        if view.kind == s.KIND_MERGED:
            raise UserError(f"{path} is a merged view of other outputs; a job writes to its own output; nothing was "
                            "changed; fix: give the job another output path")
        return cls(view, journal_of(path)[0])

    def done_mask(self) -> np.ndarray:
        return self.view.done_mask()

    def existing_files(self) -> list[int]:
        return [k for k, seg in enumerate(self.view.segments) if seg.path.exists()]

    def first_key_mismatch(self, items) -> int | None:
        """The first item whose key differs from `items.keys` (an ItemSource), in the files created so far."""
        for seg, file in self.view.each():
            if file is None:
                continue
            theirs = read_dataset(file, s.ITEMS, seg.path)["key"]
            ours = items.keys(seg.start, seg.start + seg.count)
            for offset, key in enumerate(theirs):
                if text(key) != ours[offset]:
                    return seg.start + offset
        return None

    def repair_partial_files(self) -> int:
        """Check the digests of done items in data files not yet full (where the last run was writing);
        clear the flags of those that fail, so they are generated again. Returns how many failed."""
        failed = 0
        for seg, file in self.view.each():
            if file is None:
                continue
            done = read_dataset(file, s.DONE, seg.path).astype(bool)
            if done.all() or not done.any():
                continue
            bad = damaged_items(file, seg.path, np.flatnonzero(done), seg.datasets)
            if len(bad):
                clear_done_flags(seg.path, file, bad)
                failed += len(bad)
        return failed
