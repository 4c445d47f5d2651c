"""Reading an output file: open with a clear error, summarise, iterate done items."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.store import schema as s


@contextmanager
def open_output(path: Path) -> Iterator[h5py.File]:
    """Open an onepiece output read-only, or raise UserError saying what the file is instead."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file; fix: give the path of an output (.h5) file")
    if path.is_dir():
        raise UserError(f"{path} is a folder; fix: give the path of an output (.h5) file")
    if not h5py.is_hdf5(path):
        raise UserError(f"{path} is not an HDF5 file")
    try:
        file = h5py.File(path, "r", locking=False)
    except OSError as err:
        raise UserError(f"{path}: cannot open ({err})") from None
    with file:
        if file.attrs.get("format") != s.FORMAT:
            raise UserError(f"{path} is an HDF5 file but not an onepiece output (no format attribute)")
        missing = [f"attribute {a}" for a in s.REQUIRED_ATTRS if a not in file.attrs]
        missing += [f"dataset /{d}" for d in s.REQUIRED_DATASETS if d not in file]
        if missing:
            raise UserError(f"{path} is damaged or from an incompatible onepiece version (format "
                            f"{file.attrs.get('format_version')}): missing {', '.join(missing)}")
        yield file


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class ItemRecord:
    index: int
    key: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    height: int
    width: int
    frames: int
    image: str  # the conditioning image's path, "" for none


def item_records(file: h5py.File, indices: np.ndarray) -> list[ItemRecord]:
    rows = s.current_items(file[s.ITEMS][np.sort(indices)]) if len(indices) else []
    return [ItemRecord(int(r["index"]), _text(r["key"]), _text(r["prompt"]), _text(r["negative_prompt"]),
                       int(r["seed"]), int(r["steps"]), float(r["guidance"]), int(r["height"]),
                       int(r["width"]), int(r["frames"]), _text(r["image"])) for r in rows]


def output_dataset(file: h5py.File) -> h5py.Dataset:
    return file[s.OUTPUTS][s.OUTPUT_DATASETS[_text(file.attrs["output_kind"])]]


def _telemetry_summary(file: h5py.File) -> list[dict]:
    """One record per staged run: its policy, moves, and where the rank-seconds went."""
    records = []
    for name, group in sorted(file.get("telemetry", {}).items()):
        ranks = group["ranks"][...]
        moves = group["moves"][...] if "moves" in group else []
        records.append({
            "run": name, "policy": _text(group.attrs.get("policy", "static")), "layout": _text(group.attrs.get("layout", "")),
            "ranks": int(len(ranks)), "moves": int(len(moves)),
            "busy_rank_s": float(ranks["busy_s"].sum()), "idle_rank_s": float(ranks["wait_s"].sum()),
            "moving_data_rank_s": float(ranks["send_s"].sum()),
        })
    return records


def summary(file: h5py.File, path: Path) -> dict:
    """The facts `onepiece inspect` shows, as plain JSON-able values."""
    done = file[s.DONE][...].astype(bool)
    timings = file[s.TIMINGS][...]
    committed = file[s.COMMITTED_AT][...][done]
    stages = [_text(x) for x in file[s.TIMINGS].attrs["stages"]]
    mean = {st: (float(np.mean(timings[done, i])) if done.any() else None) for i, st in enumerate(stages)}
    rate = None
    if committed.size >= 2 and committed.max() > committed.min():
        rate = float((committed.size - 1) / (committed.max() - committed.min()))
    prov = {k: _text(v) for k, v in file[s.PROVENANCE].attrs.items() if k != "job_file"}
    runs = [{name: (_text(r[name]) if isinstance(r[name], (bytes, str)) else int(r[name]))
             for name in s.RUN_DTYPE.names} for r in file[s.RUNS][...]]
    outputs = {name: {"shape": list(ds.shape), "dtype": str(ds.dtype), "chunks": list(ds.chunks or ())}
               for name, ds in file[s.OUTPUTS].items()}
    return {
        "telemetry": _telemetry_summary(file),
        "file": str(path),
        "format_version": int(file.attrs["format_version"]),
        "job_name": _text(file.attrs["job_name"]),
        "job_fingerprint": _text(file.attrs["job_fingerprint"]),
        "items_total": int(file.attrs["items_total"]),
        "items_done": int(done.sum()),
        "complete": bool(done.all()),
        "output_kind": _text(file.attrs["output_kind"]),
        "frame_rate": int(file.attrs["frame_rate"]) if "frame_rate" in file.attrs else None,
        "outputs": outputs,
        "microbatch": int(file.attrs["microbatch"]),
        "execution": _text(file.attrs["execution"]),
        "mean_seconds_per_item": mean,
        "commit_rate_items_per_s": rate,
        "provenance": prov,
        "runs": runs,
    }
