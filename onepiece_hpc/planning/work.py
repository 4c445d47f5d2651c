"""How much work an item is, and progress measured in work rather than in item counts.

An item's work is its denoiser work: forwards (steps, twice with classifier-free guidance) times
the pixels it makes (height x width x frames), in megapixel-forwards. That is the cost model's
per-unit factor for a denoising stage, carried over to items of different sizes (a merged sweep
mixes them). A job of equal items gets the item-count ETA back; a job whose remaining items are
longer videos or more steps gets an ETA that knows it.

The rate is taken over the latest RATE_WINDOW commits, and the ETA is the work left over that
rate. The bar, `onepiece status`, the metrics and the report all call `work_progress`.
"""

from __future__ import annotations

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
                  commit_times: np.ndarray, commit_work: np.ndarray) -> WorkProgress:
    """Progress from totals and the latest commits: their times (any clock, one for all) and the
    work of each; both are cut to the latest RATE_WINDOW by time."""
    times = np.asarray(commit_times, dtype=float)
    work = np.asarray(commit_work, dtype=float)
    order = np.argsort(times, kind="stable")[-RATE_WINDOW:]
    times, work = times[order], work[order]
    rate_items = rate_work = None
    if times.size >= 2 and times[-1] > times[0]:
        span = times[-1] - times[0]
        rate_items = float((times.size - 1) / span)
        rate_work = float(work[1:].sum() / span)  # the first commit opens the window
    left = max(work_total - work_done, 0.0)
    if items_done >= items_total:
        eta = 0.0
    else:
        eta = left / rate_work if rate_work else None
    return WorkProgress(items_done, items_total, float(work_done), float(work_total), rate_items, rate_work, eta)
