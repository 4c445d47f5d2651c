"""The /items rows of a range of a plan's items, as a data file stores them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import h5py
import numpy as np

from onepiece_hpc.store import schema as s

if TYPE_CHECKING:  # the store reads plans through ItemSource; it needs no planning code to run
    from onepiece_hpc.spec.plan import Plan


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
    """A planned job's items as an ItemSource."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.name, self.fingerprint = plan.job.name, plan.fingerprint
        self.model_identity, self.microbatch, self.execution = plan.model_identity, plan.job.microbatch, plan.execution

    def __len__(self) -> int:
        return len(self.plan.items)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return item_rows(self.plan, start, stop)

    def keys(self, start: int, stop: int) -> list[str]:
        return [item.key for item in self.plan.items[start:stop]]

    def where(self, index: int) -> str:
        return f"prompt file line {self.plan.items[index].line}"


def item_rows(plan: Plan, start: int, stop: int) -> np.ndarray:
    """Rows for items [start, stop) (ITEM_DTYPE): key, prompt, seed, params and unit of each."""
    unit_starts = [unit.start for unit in plan.units]
    first_unit = bisect.bisect_right(unit_starts, start) - 1
    table = np.empty(stop - start, dtype=s.ITEM_DTYPE)
    unit_index = first_unit
    for row, item in enumerate(plan.items[start:stop]):
        while plan.units[unit_index].stop <= item.index:
            unit_index += 1
        p = item.params
        table[row] = (item.index, item.key.encode(), item.prompt, item.negative_prompt, item.seed, p.steps,
                      p.guidance, p.height, p.width, unit_index, item.meta, p.frames,
                      str(p.image.path) if p.image else "")
    return table


def _text(value) -> str:
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
    return [ItemRecord(int(r["index"]), _text(r["key"]), _text(r["prompt"]), _text(r["negative_prompt"]),
                       int(r["seed"]), int(r["steps"]), float(r["guidance"]), int(r["height"]),
                       int(r["width"]), int(r["frames"]), _text(r["image"])) for r in rows]
