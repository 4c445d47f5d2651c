"""What a report says about an output, read once, segment by segment (one data file open at a time):
progress in work per shard and in all, commit times, failed and missing items, provenance, runs.

A file being written is read as `onepiece inspect` reads it (read-only, no lock taken); what a
kill or a damaged file leaves becomes the store's UserError naming the file and the fix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from onepiece_hpc.planning.work import WorkProgress, rows_work, work_progress
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.failed import failed_mask, still_failed
from onepiece_hpc.store.journal import FailedUnit
from onepiece_hpc.store.lock import STALE_AFTER_S
from onepiece_hpc.store.reader import OutputView
from onepiece_hpc.store.safe_read import HDF5_ERRORS, damaged_error, read_dataset, short, text

MISSING_SHOWN = 10  # missing items named by key and prompt
FAILURES_NAMED = 20  # failed units whose first item is named by its prompt
WORK_FIELDS = ["steps", "guidance", "height", "width", "frames"]

COMPLETE, IN_PROGRESS, STOPPED = "complete", "in progress", "stopped"


@dataclass(frozen=True)
class ShardProgress:
    """One source of a merged view (or the output itself): its items and how far it is."""

    label: str          # its path as the merged view records it, or the output's file name
    path: Path
    offset: int         # its first item's index in the view
    progress: WorkProgress
    state: str          # COMPLETE, IN_PROGRESS (its writer's lock is fresh) or STOPPED


@dataclass(frozen=True)
class MissingItem:
    index: int
    key: str     # "" where its data file was not created yet (nothing records it but the plan)
    prompt: str


@dataclass
class OutputFacts:
    path: Path
    kind: str
    attrs: dict
    provenance: dict
    runs: list[dict]
    progress: WorkProgress
    state: str
    shards: list[ShardProgress]
    commit_times: np.ndarray           # unix seconds of every done item, sorted
    commit_work: np.ndarray            # the work of each, in the same order
    done_mask: np.ndarray              # a bool an item
    work_estimated: bool               # some items' work is the mean of those whose rows are written
    failures: list[FailedUnit]         # units with an item failed and not done since
    failed_items: int
    missing_items: int                 # neither done nor failed
    missing: list[MissingItem] = field(default_factory=list)
    failed_named: list[MissingItem] = field(default_factory=list)  # the first item of each of the first failures
    read_at: float = field(default_factory=time.time)

    @property
    def job_name(self) -> str:
        return str(self.attrs.get("job_name", ""))


def _shard_table(view: OutputView) -> list[tuple[str, Path, int, int]]:
    """(label, path, offset, items) of each source; the output itself where it is no merged view."""
    if view.kind != s.KIND_MERGED:
        return [(view.path.name, view.path, 0, view.items_total)]
    return [(str(src["path"]), (view.path.parent / str(src["path"])).resolve(), int(src["offset"]), int(src["items"]))
            for src in view.sources]


def writer_state(output: Path, complete: bool) -> str:
    """COMPLETE, IN_PROGRESS when a writer holds the output's lock and has refreshed it lately, else STOPPED."""
    if complete:
        return COMPLETE
    lock = Path(s.data_folder(output)) / s.LOCK
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return STOPPED
    return IN_PROGRESS if age <= STALE_AFTER_S else STOPPED


class _Accumulator:
    """Per-shard sums and the view's commits, filled segment by segment."""

    def __init__(self, shards: list[tuple[str, Path, int, int]], total: int) -> None:
        self.offsets = np.array([offset for _, _, offset, _ in shards], dtype=np.int64)
        count = len(shards)
        self.done = np.zeros(count, dtype=np.int64)
        self.work_done = np.zeros(count)
        self.work_known = np.zeros(count)
        self.items_known = np.zeros(count, dtype=np.int64)
        self.times: list[list[np.ndarray]] = [[] for _ in range(count)]
        self.work: list[list[np.ndarray]] = [[] for _ in range(count)]
        self.done_mask = np.zeros(total, dtype=bool)

    def shard_of(self, start: int) -> int:
        return int(np.searchsorted(self.offsets, start, side="right") - 1)

    def add(self, start: int, done: np.ndarray, work: np.ndarray, committed: np.ndarray) -> None:
        shard = self.shard_of(start)
        self.done_mask[start:start + len(done)] = done
        self.done[shard] += int(done.sum())
        self.work_done[shard] += float(work[done].sum())
        self.work_known[shard] += float(work.sum())
        self.items_known[shard] += len(work)
        timed = done & np.isfinite(committed)
        self.times[shard].append(committed[timed])
        self.work[shard].append(work[timed])


def _segment_rows(file, seg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """done, work and commit time of a segment's items."""
    done = read_dataset(file, s.DONE, seg.path).astype(bool)
    committed = np.asarray(read_dataset(file, s.COMMITTED_AT, seg.path), dtype=float)
    try:
        items = file[s.ITEMS]
        names = [n for n in WORK_FIELDS if n in (items.dtype.names or ())]
        rows = items.fields(names)[...]
    except HDF5_ERRORS as err:
        raise damaged_error(seg.path, f"/{s.ITEMS} can't be read ({short(err)})") from None
    return done, rows_work(rows), committed


def _named(view: OutputView, indices) -> list[MissingItem]:
    """Items with their key and prompt where a data file holds them (their rows are written when it is created)."""
    named = []
    for index in indices:
        seg = next(seg for seg in view.segments if seg.start <= index < seg.start + seg.count)
        file = seg.open()
        if file is None:
            named.append(MissingItem(int(index), "", ""))
            continue
        with file:
            row = read_dataset(file, s.ITEMS, seg.path, np.s_[index - seg.start])
        named.append(MissingItem(int(index), text(row["key"]), text(row["prompt"])))
    return named


def _progress(done: int, total: int, work_done: float, work_total: float, times: list[np.ndarray],
              work: list[np.ndarray]) -> WorkProgress:
    return work_progress(done, total, work_done, work_total, np.concatenate([np.empty(0), *times]),
                         np.concatenate([np.empty(0), *work]))


def read_output_facts(view: OutputView) -> OutputFacts:
    """Everything but telemetry and thumbnails that the report shows of `view`."""
    shards = _shard_table(view)
    acc = _Accumulator(shards, view.items_total)
    for seg, file in view.each():
        if file is not None:
            acc.add(seg.start, *_segment_rows(file, seg))
    mean_work = acc.work_known.sum() / acc.items_known.sum() if acc.items_known.sum() else 1.0
    estimated = False
    shard_rows = []
    for number, (label, path, offset, items) in enumerate(shards):
        unknown = items - int(acc.items_known[number])
        estimated |= unknown > 0
        work_total = float(acc.work_known[number] + unknown * mean_work)
        progress = _progress(int(acc.done[number]), items, float(acc.work_done[number]), work_total,
                             acc.times[number], acc.work[number])
        shard_rows.append(ShardProgress(label, path, offset, progress, writer_state(path, progress.complete)))
    times = np.concatenate([np.empty(0), *(t for ts in acc.times for t in ts)])
    work = np.concatenate([np.empty(0), *(w for ws in acc.work for w in ws)])
    order = np.argsort(times, kind="stable")
    whole = work_progress(int(acc.done.sum()), view.items_total, float(acc.work_done.sum()),
                          float(sum(p.progress.work_total for p in shard_rows)), times, work)
    failed = failed_mask(view.failures, acc.done_mask) if view.failures else np.zeros(view.items_total, dtype=bool)
    failures = still_failed(view.failures, acc.done_mask) if view.failures else []
    states = {shard.state for shard in shard_rows}
    state = COMPLETE if whole.complete else IN_PROGRESS if IN_PROGRESS in states else STOPPED
    return OutputFacts(
        path=view.path, kind=view.kind, attrs=dict(view.attrs), provenance=dict(view.provenance),
        runs=list(view.runs), progress=whole, state=state, shards=shard_rows, commit_times=times[order],
        commit_work=work[order], done_mask=acc.done_mask, work_estimated=estimated, failures=failures,
        failed_items=int(failed.sum()),
        missing_items=int((~acc.done_mask & ~failed).sum()),
        missing=_named(view, np.flatnonzero(~acc.done_mask & ~failed)[:MISSING_SHOWN]),
        failed_named=_named(view, [f.start for f in failures[:FAILURES_NAMED]]))


def iso_to_unix(value: str) -> float | None:
    """A journal time ('2026-12-02T04:40:15+00:00') as unix seconds; None if it is empty or not a time."""
    try:
        return datetime.fromisoformat(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None
