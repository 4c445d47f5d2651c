"""`onepiece verify`: check every done item's bytes against its digest, name what is damaged,
missing or failed, and (with repair) mark damaged items to be generated again.

Repair never deletes: a data file that can't be read is moved aside under a new name, and the
flags of items whose bytes fail their digest are cleared, all under the writer's lock so no
run writes the output meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.store import journal
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.failed import failed_mask
from onepiece_hpc.store.files import temporary_path
from onepiece_hpc.store.integrity import clear_done_flags, damaged_items
from onepiece_hpc.store.lock import WriterLock, myself
from onepiece_hpc.store.merge import KeyTable, read_keys
from onepiece_hpc.store.provenance import now_iso
from onepiece_hpc.store.reader import OutputView, Segment, view_of
from onepiece_hpc.store.safe_read import open_hdf5, read_dataset


@dataclass
class VerifyReport:
    path: str
    items_total: int
    done_ok: int = 0
    damaged: list[int] = field(default_factory=list)       # done, but their bytes fail the digest
    unreadable: list[str] = field(default_factory=list)    # files that can't be read, with why
    lost: list[int] = field(default_factory=list)          # in a data file that was created and is gone or damaged
    not_done: int = 0                                      # not generated yet (failed ones included)
    failed: list[int] = field(default_factory=list)        # not done: their unit failed when generated
    unchecked: int = 0                                     # done, but written without digests (format 2)
    duplicates: list[str] = field(default_factory=list)
    repaired: int = 0
    moved_aside: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.damaged or self.unreadable or self.lost or self.duplicates)

    @property
    def complete(self) -> bool:
        return self.clean and self.not_done == 0

    def as_dict(self) -> dict:
        return {"file": self.path, "items_total": self.items_total, "done_ok": self.done_ok,
                "damaged": self.damaged, "lost": self.lost, "unreadable": self.unreadable,
                "not_done": self.not_done, "failed": self.failed, "unchecked": self.unchecked,
                "duplicates": self.duplicates,
                "repaired": self.repaired, "moved_aside": self.moved_aside, "complete": self.complete}


def _check_segment(seg: Segment, report: VerifyReport, on_keys: Callable[[np.ndarray], None] | None = None,
                   done_out: np.ndarray | None = None) -> list[int]:
    """Check one segment (its item keys to `on_keys`, its done flags into `done_out`); returns the local indices
    of its damaged items (empty if none or unreadable)."""
    try:
        file = seg.open()
    except UserError as err:
        report.unreadable.append(err.render())
        report.lost += list(range(seg.start, seg.start + seg.count))
        return []
    if file is None:
        report.not_done += seg.count
        return []
    with file:
        try:
            done = read_dataset(file, s.DONE, seg.path).astype(bool)
            if on_keys is not None:
                on_keys(read_keys(file, seg.path))
            indices = np.flatnonzero(done)
            if not seg.has_digest:
                report.unchecked += len(indices)
                report.not_done += int((~done).sum())
                return []
            bad = damaged_items(file, seg.path, indices, seg.datasets)
        except UserError as err:
            report.unreadable.append(err.render())
            report.lost += list(range(seg.start, seg.start + seg.count))
            return []
    report.not_done += int((~done).sum())
    if done_out is not None:
        done_out[seg.start:seg.start + seg.count] = done
    report.done_ok += len(indices) - len(bad)
    report.damaged += [seg.start + int(i) for i in bad]
    return [int(i) for i in bad]


def verify_output(path: Path, repair: bool = False) -> VerifyReport:
    view = view_of(path)
    if repair and view.kind != s.KIND_OUTPUT:
        raise UserError(f"{path} is a {view.kind} output; --repair works on a format-3 output that a job writes; "
                        "fix: verify and repair each source of a merged view on its own")
    if not repair:
        return _verify(view)
    folder = Path(s.data_folder(path))
    folder.mkdir(exist_ok=True)
    lock = WriterLock.acquire(folder / s.LOCK, myself("verify", "", 0), path)
    try:
        return _verify(view_of(path), folder)
    finally:
        lock.release()


def _verify(view: OutputView, repair_in: Path | None = None) -> VerifyReport:
    report = VerifyReport(str(view.path), view.items_total)
    report.unreadable += view.warnings
    keys = KeyTable() if view.kind == s.KIND_MERGED else None
    by_source: dict[str, list[Segment]] = {}  # a merged view's sources, in order, to name duplicates
    done = np.zeros(view.items_total, dtype=bool) if view.failures else None
    for number, seg in enumerate(view.segments):
        unreadable_before = len(report.unreadable)
        on_keys = None
        if keys is not None:
            origin = len(by_source) - (seg.source in by_source)
            by_source.setdefault(seg.source, []).append(seg)
            on_keys = partial(keys.add, origin, seg.own_start)
        bad = _check_segment(seg, report, on_keys, done)
        if repair_in is None:
            continue
        if bad:
            with open_hdf5(seg.path, "data") as file:
                clear_done_flags(seg.path, file, np.array(bad))
            report.repaired += len(bad)
        if len(report.unreadable) > unreadable_before and seg.path.exists():
            report.moved_aside.append(_move_aside(seg.path))
            report.repaired += seg.count
        if len(report.unreadable) > unreadable_before:
            journal.append(repair_in / s.JOURNAL, {"event": "file_removed", "file": number, "at": now_iso()})
    if done is not None:
        report.failed = np.flatnonzero(failed_mask(view.failures, done)).tolist()
    if keys is not None:
        try:
            report.duplicates = keys.problems([(Path(source), segs) for source, segs in by_source.items()])
        except UserError as err:  # a source's file that can't be read is named above already
            if not report.unreadable:
                report.unreadable.append(err.render())
    return report


def _move_aside(path: Path) -> str:
    """Give a damaged file a new, unused name beside it (never replacing anything) and return it."""
    with temporary_path(path.parent, f"{path.name}.damaged-", suffix="") as aside:
        kept = aside.with_name(aside.name + ".h5")
        os.link(path, kept)
        os.unlink(path)
    return str(kept)


def ranges(items: list[int], limit: int = 12) -> str:
    """'3, 7-9, 12 (and 4 more ranges)' for sorted item numbers."""
    if not items:
        return "none"
    runs: list[tuple[int, int]] = []
    for item in sorted(items):
        if runs and item == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], item)
        else:
            runs.append((item, item))
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
    return text + (f" (and {len(runs) - limit} more ranges)" if len(runs) > limit else "")
