"""Writing an output file: create it, or resume it if it belongs to the same job; commit units."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.spec.plan import Plan
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.provenance import Provenance, now_iso
from onepiece_hpc.store.telemetry import write_telemetry


@dataclass(frozen=True)
class OutputLayout:
    """The shape of one item's output, e.g. (H, W, 3) for images, (T, H, W, 3) for video."""

    kind: str  # "image" | "video"
    item_shape: tuple[int, ...]
    frame_rate: int | None = None  # frames per second of a video

    @property
    def dataset(self) -> str:
        """The /outputs dataset, and the name of the decode stage's tensor that fills it."""
        return s.OUTPUT_DATASETS[self.kind]


def check_writable(path: Path, problems: list[str]) -> None:
    """Fail early (before any model loads) if the output can't be created or updated."""
    if path.exists():
        if path.is_dir():
            problems.append(f"output {path} is a folder; fix: give a file path ending in .h5")
        elif not os.access(path, os.R_OK | os.W_OK):
            problems.append(f"output {path} exists but is not readable and writable by you; "
                            "fix: change its permissions or choose another output path")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    reason = None
    if not parent.is_dir():
        reason = f"{parent} is not a folder"
    else:
        try:
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as err:
            reason = f"{parent} is not writable ({err.strerror})"
    if reason:
        problems.append(f"output {path}: cannot create it, {reason}; "
                        "fix: choose an output path in a folder you can write")


def _items_table(plan: Plan) -> np.ndarray:
    unit_of = np.empty(len(plan.items), dtype=np.int64)
    for unit in plan.units:
        unit_of[unit.start:unit.stop] = unit.index
    table = np.empty(len(plan.items), dtype=s.ITEM_DTYPE)
    for i, item in enumerate(plan.items):
        p = item.params
        table[i] = (item.index, item.key.encode(), item.prompt, item.negative_prompt, item.seed,
                    p.steps, p.guidance, p.height, p.width, unit_of[i], item.meta, p.frames,
                    str(p.image.path) if p.image else "")
    return table


def _create(path: Path, plan: Plan, layout: OutputLayout, provenance: Provenance) -> None:
    """Write the whole skeleton into a temporary file, then rename it into place atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    n = len(plan.items)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({
                "format": s.FORMAT, "format_version": s.FORMAT_VERSION, "job_name": plan.job.name,
                "job_fingerprint": plan.fingerprint, "model_identity": plan.model_identity,
                "model_ref": provenance.model_ref, "items_total": n, "output_kind": layout.kind,
                "microbatch": plan.job.microbatch, "execution": plan.execution,
            })
            if layout.frame_rate is not None:
                f.attrs["frame_rate"] = layout.frame_rate
            f.create_dataset(s.ITEMS, data=_items_table(plan))
            f.create_dataset(s.DONE, shape=(n,), dtype="u1", dcpl=s.preallocated())[...] = 0
            timings = f.create_dataset(s.TIMINGS, shape=(n, len(s.TIMING_STAGES)), dtype="<f8",
                                       dcpl=s.preallocated())
            timings[...] = np.nan
            timings.attrs["stages"] = np.array(s.TIMING_STAGES, dtype=h5py.string_dtype())
            timings.attrs["units"] = "seconds per item (a unit's time split evenly over its items)"
            f.create_dataset(s.COMMITTED_AT, shape=(n,), dtype="<f8", dcpl=s.preallocated())[...] = np.nan
            outputs = f.create_group(s.OUTPUTS)
            outputs.create_dataset(layout.dataset, shape=(n, *layout.item_shape), dtype="u1",
                                   chunks=(1, *layout.item_shape), dcpl=s.preallocated())
            f.create_group(s.PROVENANCE).attrs.update(provenance.as_attrs())
            f.create_dataset(s.RUNS, shape=(0,), maxshape=(None,), dtype=s.RUN_DTYPE, chunks=(16,))
        os.chmod(tmp, 0o644 & ~_umask())
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mismatch(f: h5py.File, plan: Plan, path: Path) -> str | None:
    """Why the file at `path` is not this job's output, or None if it is."""
    attrs = f.attrs
    if attrs.get("format") != s.FORMAT:
        return f"{path} is an HDF5 file but not an onepiece output"
    if int(attrs.get("format_version", 0)) > s.FORMAT_VERSION:
        return f"{path} was written by a newer onepiece (format {attrs['format_version']}); upgrade to resume it"
    if attrs.get("job_fingerprint") == plan.fingerprint:
        return None
    theirs = f"job '{attrs.get('job_name')}' with {attrs.get('items_total')} items"
    if attrs.get("model_identity") != plan.model_identity:
        why = "a different model"
    elif int(attrs.get("items_total", -1)) != len(plan.items):
        why = f"{attrs.get('items_total')} items, this job has {len(plan.items)}"
    elif int(attrs.get("microbatch", -1)) != plan.job.microbatch or attrs.get("execution") != plan.execution:
        why = (f"microbatch {attrs.get('microbatch')}, {attrs.get('execution')}; this job has microbatch "
               f"{plan.job.microbatch}, {plan.execution} (both change the output bits)")
    else:
        keys = f[s.ITEMS]["key"]
        first = next(i for i, item in enumerate(plan.items) if keys[i].decode() != item.key)
        why = f"item {first} differs (prompt, seed or params; prompt file line {plan.items[first].line})"
    return f"{path} holds the output of another job ({theirs}): {why}"


class OutputWriter:
    """An open output file of one job. Commits are crash-safe; see store/schema.py."""

    def __init__(self, path: Path, file: h5py.File, run_row: int) -> None:
        self.path = path
        self._file = file
        self._done = file[s.DONE]
        self._outputs = file[s.OUTPUTS][next(iter(file[s.OUTPUTS]))]
        self._timings = file[s.TIMINGS]
        self._committed_at = file[s.COMMITTED_AT]
        self._run_row = run_row
        self.committed_this_run = 0

    @classmethod
    def open(cls, path: Path, plan: Plan, layout: OutputLayout, provenance: Provenance,
             mode: str) -> OutputWriter:
        """Create the output, or resume it if it is this job's; refuse anything else (exit 2)."""
        if not path.exists():
            _create(path, plan, layout, provenance)
        elif not h5py.is_hdf5(path):
            raise UserError(f"{path} exists and is not an HDF5 file; nothing was changed; "
                            "fix: choose another output path (-o) or move the file away")
        try:
            file = h5py.File(path, "r+")
        except OSError as err:
            if "lock" in str(err).lower():
                raise UserError(f"{path} is open for writing in another process (a run still going?); "
                                "fix: wait for it to finish or choose another output path") from None
            raise UserError(f"cannot open {path} ({err}); nothing was changed; fix: check the file, "
                            "or choose another output path") from None
        try:
            problem = _mismatch(file, plan, path)
            if problem:
                raise UserError(f"{problem}; nothing was changed; fix: choose another output path (-o) "
                                "or move the old file away")
            runs = file[s.RUNS]
            row = runs.shape[0]
            runs.resize((row + 1,))
            runs[row] = (now_iso(), "", socket.gethostname(), os.getpid(), mode, "running", 0)
            file.flush()
        except BaseException:
            file.close()
            raise
        return cls(path, file, row)

    def done_mask(self) -> np.ndarray:
        return self._done[...].astype(bool)

    def commit(self, start: int, outputs: np.ndarray, stage_seconds: np.ndarray) -> int:
        """Store items [start, start + len(outputs)), then mark them done; returns how many were new.

        `stage_seconds` holds each item's seconds for every timing stage but the last ("write"),
        which is measured here.
        """
        stop = start + len(outputs)
        fresh = ~self._done[start:stop].astype(bool)
        if not fresh.any():
            return 0
        began = time.perf_counter()
        for offset in np.flatnonzero(fresh):
            self._outputs[start + offset] = outputs[offset]
        write = (time.perf_counter() - began) / len(outputs)
        timings = np.hstack([stage_seconds, np.full((len(outputs), 1), write)])
        self._timings[start:stop] = np.where(fresh[:, None], timings, self._timings[start:stop])
        self._committed_at[start:stop] = np.where(fresh, time.time(), self._committed_at[start:stop])
        self._file.flush()
        self._done[start:stop] = np.ones(stop - start, dtype="u1")
        self._file.flush()
        count = int(fresh.sum())
        self.committed_this_run += count
        return count

    def record_telemetry(self, ranks: np.ndarray, samples: np.ndarray, stages: np.ndarray, moves: np.ndarray,
                         attrs: dict) -> None:
        """Store this run's telemetry under /telemetry/run<N> (N: its row in /runs)."""
        write_telemetry(self._file, self._run_row, ranks, samples, stages, moves, attrs)
        self._file.flush()

    def close(self, status: str) -> None:
        runs = self._file[s.RUNS]
        row = runs[self._run_row]
        runs[self._run_row] = (row["started_at"], now_iso(), row["host"], row["pid"], row["mode"],
                               status, self.committed_this_run)
        self._file.close()
