"""The /items rows of a range of a plan's items, as a data file stores them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import h5py
import numpy as np

from onepiece_hpc.store import schema as s

if TYPE_CHECKING:  # the store reads plans through ItemSource; it needs no planning code to run
    from onepiece_hpc.planning.plan import Plan


class ItemSource(Protocol):
    """What the writer needs to know of a job's items: identity, count, and rows a range at a time
    (so nothing costs Python objects per item beyond the range being created)."""

    name: str
    fingerprint: str
    model_identity: str
    microbatch: int
    execution: str

    def __len__(self) -> int: ...

    def rows(self, start: int, stop: int) -> np.ndarray: ...

    def keys(self, start: int, stop: int) -> list[str]: ...

    def where(self, index: int) -> str: ...


class PlanItems:
    """A planned job's items as an ItemSource (rows built from the plan's columns, a range at a time)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.name, self.fingerprint = plan.job.name, plan.fingerprint
        self.model_identity, self.microbatch, self.execution = plan.model_identity, plan.job.microbatch, plan.execution

    def __len__(self) -> int:
        return len(self.plan.table)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return item_rows(self.plan, start, stop)

    def keys(self, start: int, stop: int) -> list[str]:
        return [key.decode() for key in self.plan.hex_keys(start, stop)]

    def where(self, index: int) -> str:
        return f"prompt file line {int(self.plan.table.lines[index])}"


def item_rows(plan: Plan, start: int, stop: int) -> np.ndarray:
    """Rows for items [start, stop) (ITEM_DTYPE): key, prompt, seed, params and unit of each."""
    t = plan.table
    ids = t.param_ids[start:stop]
    table = np.empty(stop - start, dtype=s.ITEM_DTYPE)
    table["index"] = np.arange(start, stop)
    table["key"] = plan.hex_keys(start, stop)
    table["prompt"] = t.prompts.rows(start, stop)
    table["negative_prompt"] = t.negatives.rows(start, stop)
    table["seed"] = t.seeds[start:stop]
    for field, value in (("steps", lambda p: p.steps), ("guidance", lambda p: p.guidance),
                         ("height", lambda p: p.height), ("width", lambda p: p.width),
                         ("frames", lambda p: p.frames),
                         ("image", lambda p: str(p.image.path) if p.image else "")):
        column = np.array([value(p) for p in plan.params], dtype=object if field == "image" else None)
        table[field] = column[ids]
    table["unit"] = np.searchsorted(plan.bounds, np.arange(start, stop), side="right") - 1
    table["meta"] = t.metas.rows(start, stop)
    return table


def as_text(value) -> str:
    """A string read from HDF5 (bytes or str) as str."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class ItemRecord:
    """One item's row as export and verify report it."""

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


def item_records(file: h5py.File, path: Path, local: np.ndarray) -> list[ItemRecord]:
    """The rows of a data file's items at the local indices `local` (sorted)."""
    from onepiece_hpc.store.safe_read import read_dataset

    if not len(local):
        return []
    rows = s.current_items(read_dataset(file, s.ITEMS, path, np.s_[int(local[0]):int(local[-1]) + 1]))
    rows = rows[np.asarray(local) - int(local[0])]
    return [ItemRecord(int(r["index"]), as_text(r["key"]), as_text(r["prompt"]), as_text(r["negative_prompt"]),
                       int(r["seed"]), int(r["steps"]), float(r["guidance"]), int(r["height"]),
                       int(r["width"]), int(r["frames"]), as_text(r["image"])) for r in rows]
