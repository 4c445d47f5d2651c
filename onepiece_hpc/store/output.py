"""Writing an output: create it, or resume it if it belongs to the same job; commit units.

Exactly once rests on four rules (see store/schema.py for the layout; store/output_index.py
creates a new output's index and tells another job's output apart):
- the index is published with link(2), so an existing output is never replaced, and the
  writer holds the lock of store/lock.py, so one process writes an output at a time;
- committed bytes reach stable storage before their done flags are written (group commit:
  one fsync per data file per `sync_interval_s`, then the flags);
- each item's digest is stored beside it; a resume re-checks the data files the last run was
  filling, and `onepiece verify` checks everything;
- space for a data file is reserved when it is created, and the space the remaining items
  need is checked before work starts, so a full disk stops the run with a clear error.

A unit that fails is recorded in the journal (`record_failed`); it is settled like a done one
until a run retries it (`pending_mask(retry_failed=True)`), and a commit of it records that it
recovered (store/failed.py).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.store import journal
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.datafile import (
    DataFileSpec,
    RawDataFile,
    create_data_file,
    digest,
    read_offsets,
)
from onepiece_hpc.store.failed import failed_mask, still_failed
from onepiece_hpc.store.files import AlreadyThere, free_bytes, no_space_error
from onepiece_hpc.store.index import data_file_path
from onepiece_hpc.store.items import ItemSource
from onepiece_hpc.store.journal import FailedUnit, failed_record, recovered_record
from onepiece_hpc.store.lock import WriterLock, myself
from onepiece_hpc.store.output_index import OutputLayout, StoreSettings, create_index, describe_datasets, mismatch
from onepiece_hpc.store.preflight import check_space, remove_orphans, warn_changes
from onepiece_hpc.store.provenance import Provenance, RunInfo, now_iso
from onepiece_hpc.store.reader import StoreReader
from onepiece_hpc.store.telemetry import save_record

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
MAX_ERROR_CHARS = 2000  # of a failed unit's error kept in the journal


class OutputWriter:
    """The one open writer of an output: commits are durable before they are marked done."""

    def __init__(self, path: Path, items: ItemSource, reader: StoreReader, lock: WriterLock, run_number: int,
                 settings: StoreSettings, done: np.ndarray, existing: set[int]) -> None:
        self.path = path
        self._items = items
        self._store = reader.layout
        self._store_id = str(reader.attrs["store_id"])
        self._folder = Path(s.data_folder(path))
        self._journal = self._folder / s.JOURNAL
        self._lock = lock
        self._run = run_number
        self._settings = settings
        self._done = done
        self._existing = existing
        self._open: dict[int, RawDataFile] = {}
        self._pending: list[np.ndarray] = []  # items written, their flags not yet
        self._pending_since = 0.0
        self._closed = False
        self._failures: dict[int, FailedUnit] = dict(reader.journal.failures)  # by first item, done or not
        self.committed_this_run = 0
        self.failed_this_run = 0

    @classmethod
    def open(cls, path: Path, items: ItemSource, layout: OutputLayout, provenance: Provenance, mode: str,
             settings: StoreSettings = StoreSettings(), run: RunInfo | None = None) -> OutputWriter:
        """Create the output, or resume it if it is this job's; refuse anything else (exit 2)."""
        run = run or RunInfo(mode=mode)
        if not path.exists():
            create_index(path, items, layout, provenance, settings)
        try:
            reader = StoreReader.open_for_resume(path)
        except UserError as err:
            raise UserError(f"{err.render()}; nothing was changed") from None
        problem = mismatch(reader, items)
        if not problem and reader.layout.timing_columns != tuple(layout.timing_columns):
            problem = (f"{path} records the stages {', '.join(reader.layout.timing_columns[:-1])} and this job's "
                       f"pipeline has {', '.join(layout.timing_columns[:-1])}")
        if not problem and reader.layout.extras != tuple(layout.extras):
            problem = (f"{path} holds {describe_datasets(reader.layout.extras)} beside its outputs and this job "
                       f"makes {describe_datasets(layout.extras)} (a workflow step's keep: changed?)")
        if problem:
            raise UserError(f"{problem}; nothing was changed; fix: choose another output path (-o) "
                            "or move the old output away")
        folder = Path(s.data_folder(path))  # the reader has checked that it is there
        lock = WriterLock.acquire(folder / s.LOCK, myself(mode, run.slurm_job, run.slurm_restart), path)
        try:
            reader = StoreReader.open_for_resume(path)  # what the last holder left, read under the lock
            remove_orphans(folder)
            previous = reader.journal.runs
            repaired = reader.repair_partial_files()
            if repaired:
                log.warning("%s: %d committed item(s) failed their digest check and will be generated again",
                            path, repaired)
            done, existing = reader.done_mask(), set(reader.existing_files())  # each data file read once more
            check_space(reader.layout, existing, done, folder)
            record = {"event": "run", "run": reader.journal.next_run, "started_at": now_iso(), "pid": os.getpid(),
                      **asdict(run), "execution": items.execution}
            journal.append(folder / s.JOURNAL, record)
            warn_changes(path, previous, record)
            return cls(path, items, reader, lock, record["run"], settings, done, existing)
        except BaseException:
            lock.release()
            raise

    def done_mask(self) -> np.ndarray:
        return self._done.copy()

    # -- failed units ------------------------------------------------------------------------------
    def failed_mask(self) -> np.ndarray:
        """Items recorded as failed and not done since."""
        return failed_mask(self._failures.values(), self._done)

    def pending_mask(self, retry_failed: bool = False) -> np.ndarray:
        """Items this run generates: those neither done nor failed, or with `retry_failed` only the failed."""
        failed = self.failed_mask()
        return failed if retry_failed else ~(self._done | failed)

    def failures(self) -> list[FailedUnit]:
        """The failure records that still count (an item of theirs is not done), in item order."""
        return still_failed(self._failures.values(), self._done)

    def record_failed(self, start: int, stop: int, stage: str, rank: int | str, error: str) -> None:
        """Record items [start, stop) (one unit) as failed in `stage` on `rank` ("monolithic" for one
        process), durably: one journal line. A later failure of the same unit replaces the record."""
        at = now_iso()
        error = error if len(error) <= MAX_ERROR_CHARS else error[:MAX_ERROR_CHARS - 3] + "..."
        journal.append(self._journal, failed_record(self._run, start, stop, stage, rank, error, at))
        self._failures[start] = FailedUnit(start, stop, self._run, stage, rank, error, at)
        self.failed_this_run += int((~self._done[start:stop]).sum())

    def _recovered(self, start: int, stop: int) -> None:
        """Items [start, stop) are committed: the failure records of units among them no longer count."""
        for first in range(start, stop):
            failure = self._failures.pop(first, None)
            if failure is not None:
                journal.append(self._journal, recovered_record(self._run, failure.start, failure.stop, now_iso()))

    # -- commits -------------------------------------------------------------------------------
    def _arrays(self, outputs: np.ndarray | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The items' bytes of each dataset, in the layout's order: `outputs` is the outputs alone
        (a layout of one dataset) or every dataset's array by its name."""
        datasets = self._store.datasets
        if not isinstance(outputs, Mapping):
            outputs = {datasets[0].name: outputs}
        missing = [d.name for d in datasets if d.name not in outputs]
        if missing:
            raise ValueError(f"a commit to {self.path} lacks the dataset(s) {', '.join(missing)}")
        arrays = [outputs[d.name] for d in datasets]
        for dataset, array in zip(datasets, arrays):
            if tuple(array.shape[1:]) != dataset.item_shape or len(array) != len(arrays[0]):
                raise ValueError(f"a commit to {self.path} gives /{dataset.path} items of shape "
                                 f"{tuple(array.shape)}; it holds {len(arrays[0])} x {dataset.item_shape}")
        return arrays

    def commit(self, start: int, outputs: np.ndarray | Mapping[str, np.ndarray], stage_seconds: np.ndarray) -> int:
        """Store items [start, start + n); returns how many were new. `outputs` holds the n items'
        outputs, or for a layout with extra datasets every dataset's n items by name (more names,
        such as the seeds a message carries, are left be).

        `stage_seconds` holds each item's seconds for every timing stage but the last ("write"),
        which is measured here. Consecutive items go to disk in one write a dataset; their done
        flags follow at the next group sync.
        """
        began = time.perf_counter()
        arrays = self._arrays(outputs)
        count = len(arrays[0])
        fresh = np.flatnonzero(~self._done[start:start + count])
        if not len(fresh):
            return 0
        now = time.time()
        runs = self._runs(start, fresh)
        digests = np.zeros((count, s.DIGEST_BYTES), dtype=np.uint8)
        for first, stop in runs:
            file, local = self._file_for(start + first)
            file.write_outputs(local, [array[first:stop] for array in arrays])
            for offset in range(first, stop):
                digests[offset] = np.frombuffer(digest(*(array[offset] for array in arrays)), dtype=np.uint8)
        write_s = (time.perf_counter() - began) / len(fresh)
        timings = np.hstack([stage_seconds, np.full((count, 1), write_s)])
        for first, stop in runs:
            file, local = self._file_for(start + first)
            file.write_records(local, digests[first:stop], timings[first:stop], np.full(stop - first, now))
        written = start + fresh
        if self._failures:
            self._recovered(start, start + count)
        self._done[written] = True
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(written)
        self.committed_this_run += len(written)
        self.sync_if_due()
        return len(written)

    def _runs(self, start: int, fresh: np.ndarray) -> list[tuple[int, int]]:
        """[first, stop) offsets of consecutive fresh items that lie in one data file."""
        per_file = self._store.items_per_file
        cuts = np.flatnonzero((np.diff(fresh) != 1) | (np.diff((start + fresh) // per_file) != 0)) + 1
        return [(int(run[0]), int(run[-1]) + 1) for run in np.split(fresh, cuts)]

    def sync_if_due(self) -> None:
        if self._pending and time.monotonic() - self._pending_since >= self._settings.sync_interval_s:
            self.sync()

    def sync(self) -> None:
        """Outputs to stable storage, then their done flags (made durable by the next sync)."""
        if not self._pending:
            for file in self._open.values():
                file.sync()
            return
        for file in self._open.values():
            file.sync()
        items = np.sort(np.concatenate(self._pending))
        per_file = self._store.items_per_file
        for index in np.unique(items // per_file):
            chosen = items[items // per_file == index]
            self._open[int(index)].write_flags(chosen - index * per_file, 1)
        self._pending = []
        self._close_finished_files()

    def _close_finished_files(self) -> None:
        for index in list(self._open):
            start, stop = self._store.file_range(index)
            if self._done[start:stop].all():
                self._open.pop(index).close()

    def _file_for(self, item: int) -> tuple[RawDataFile, int]:
        index = self._store.file_of(item)
        file = self._open.get(index)
        if file is None:
            file = self._open_data_file(index)
        return file, item - index * self._store.items_per_file

    def _open_data_file(self, index: int) -> RawDataFile:
        path = data_file_path(self.path, index)
        start, stop = self._store.file_range(index)
        if index not in self._existing:
            needed = self._store.file_bytes(index)
            free = free_bytes(self._folder)
            if free is not None and free < needed:
                raise no_space_error(self._folder, needed - free)
            spec = DataFileSpec(path, index, start, stop - start, self._store_id, self._store.output_kind,
                                self._store.datasets, self._store.timing_columns)
            try:
                create_data_file(spec, self._items.rows(start, stop))
            except AlreadyThere:
                raise UserError(f"{path} appeared while this run was about to create it (this output's journal "
                                "does not list it); nothing was overwritten; fix: move it away and run again") from None
            except OSError as err:
                if "No space" in str(err) or "errno = 28" in str(err) or "Disk quota" in str(err):
                    raise no_space_error(self._folder, needed) from None
                raise
            journal.append(self._journal, {"event": "file", "file": index, "run": self._run, "at": now_iso()})
            self._existing.add(index)
        with h5py.File(path, "r", locking=False) as f:
            offsets = read_offsets(f, self._store.datasets)
        file = RawDataFile(path, offsets)
        self._open[index] = file
        return file

    # -- the run's records -------------------------------------------------------------------------
    def record_telemetry(self, tables: dict[str, np.ndarray], attrs: dict, live: bool = False) -> None:
        """Store this run's telemetry in its own file (a kill or a full disk can't touch the outputs);
        `live`: the copy replaced while the run goes on (store/telemetry.py)."""
        save_record(self._folder / s.TELEMETRY_DIR, self._run, tables, attrs, live, str(self.path))

    def close(self, status: str) -> None:
        """Sync everything, record how the run ended, release the lock. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # a second Ctrl-C waits for the close
        try:
            self.sync()
            for file in self._open.values():
                file.close()
            self._open.clear()
            journal.append(self._journal, {"event": "end", "run": self._run, "finished_at": now_iso(),
                                           "status": status, "items_committed": self.committed_this_run})
        finally:
            self._lock.release()
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
