"""How much work an item is, and progress measured in work rather than in item counts.

An item's work is its denoiser work: forwards (steps, twice with classifier-free guidance) times
the pixels it makes (height x width x frames), in megapixel-forwards. That is the cost model's
per-unit factor for a denoising stage, carried over to items of different sizes (a merged sweep
mixes them). A job of equal items gets the item-count ETA back; a job whose remaining items are
longer videos or more steps gets an ETA that knows it.

The rate is taken over the latest RATE_WINDOW commits, and the ETA is the work left over that
rate. The bar, `onepiece status`, the metrics and the report all call `work_progress` (a run's
bar and rank 0's live snapshot through `WorkMeter`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

RATE_WINDOW = 200  # the latest commits the rate is taken over


def item_work(steps, guidance, height, width, frames) -> np.ndarray:
    """Megapixel-forwards of each item (arrays or scalars of equal shape)."""
    steps = np.asarray(steps, dtype=float)
    forwards = steps * np.where(np.asarray(guidance, dtype=float) > 1.0, 2.0, 1.0)
    pixels = np.asarray(height, dtype=float) * np.asarray(width, dtype=float) * np.maximum(np.asarray(frames), 1)
    return np.maximum(forwards, 1.0) * pixels / 1e6


def rows_work(rows: np.ndarray) -> np.ndarray:
    """`item_work` of store item rows (store/schema.py ITEM_DTYPE)."""
    frames = rows["frames"] if "frames" in (rows.dtype.names or ()) else np.ones(len(rows))
    return item_work(rows["steps"], rows["guidance"], rows["height"], rows["width"], frames)


@dataclass(frozen=True)
class WorkProgress:
    items_done: int
    items_total: int
    work_done: float
    work_total: float
    rate_items_per_s: float | None  # over the latest commits
    rate_work_per_s: float | None
    eta_s: float | None             # the work left over the work rate; 0 when done, None before a rate

    @property
    def complete(self) -> bool:
        return self.items_total > 0 and self.items_done >= self.items_total

    @property
    def work_share(self) -> float:
        return self.work_done / self.work_total if self.work_total > 0 else 0.0


def work_progress(items_done: int, items_total: int, work_done: float, work_total: float,
                  commit_times: np.ndarray, commit_work: np.ndarray, commit_items: np.ndarray | None = None
                  ) -> WorkProgress:
    """Progress from totals and the latest commits: their times (any clock, one for all), the
    work of each and its items (1 each if not given); cut to the latest RATE_WINDOW by time."""
    times = np.asarray(commit_times, dtype=float)
    work = np.asarray(commit_work, dtype=float)
    items = np.ones(times.size) if commit_items is None else np.asarray(commit_items, dtype=float)
    order = np.argsort(times, kind="stable")[-RATE_WINDOW:]
    times, work, items = times[order], work[order], items[order]
    rate_items = rate_work = None
    if times.size >= 2 and times[-1] > times[0]:
        span = times[-1] - times[0]
        rate_items = float(items[1:].sum() / span)  # the first commit opens the window
        rate_work = float(work[1:].sum() / span)
    left = max(work_total - work_done, 0.0)
    if items_done >= items_total:
        eta = 0.0
    else:
        eta = left / rate_work if rate_work else None
    return WorkProgress(items_done, items_total, float(work_done), float(work_total), rate_items, rate_work, eta)


class WorkMeter:
    """Progress as commits come in (a run's bar, rank 0's live snapshot): totals, what was done
    before this run, and the latest RATE_WINDOW commits on `clock`."""

    def __init__(self, items_total: int, work_total: float, items_done: int = 0, work_done: float = 0.0,
                 clock=time.monotonic) -> None:
        self.items_total, self.work_total = items_total, float(work_total)
        self.items_done, self.work_done = items_done, float(work_done)
        self._clock = clock
        self._latest: deque[tuple[float, float, int]] = deque(maxlen=RATE_WINDOW)

    def add(self, items: int, work: float) -> None:
        """`items` more done (committed, or failed for this run), of `work` megapixel-forwards."""
        self.items_done += items
        self.work_done += work
        self._latest.append((self._clock(), float(work), items))

    def progress(self) -> WorkProgress:
        rows = np.array(self._latest, dtype=float).reshape(-1, 3)
        return work_progress(self.items_done, self.items_total, self.work_done, self.work_total,
                             rows[:, 0], rows[:, 1], rows[:, 2])
