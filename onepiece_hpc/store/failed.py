"""Failed items: the units the journal records as failed, less the items that are done since.

A failed item is settled: a plain run leaves it be, `onepiece run --retry-failed` generates it
again, and once it is done it no longer counts. The journal's records are the whole truth; a
record a kill cut short is skipped, so its unit is simply generated again by the next run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from onepiece_hpc.store.journal import FailedUnit
from onepiece_hpc.store.reader import view_of


def failed_mask(failures: Iterable[FailedUnit], done: np.ndarray) -> np.ndarray:
    """Items that failed and are not done (records beyond the output's items are ignored)."""
    mask = np.zeros(len(done), dtype=bool)
    for failure in failures:
        mask[failure.start:failure.stop] = True
    return mask & ~done


def still_failed(failures: Iterable[FailedUnit], done: np.ndarray) -> list[FailedUnit]:
    """The failure records with an item not done yet, in item order."""
    return sorted((f for f in failures if f.start < len(done) and not done[f.start:f.stop].all()),
                  key=lambda f: f.start)


def read_failures(path: Path) -> tuple[list[FailedUnit], int]:
    """The failures of the output at `path` that still count, and how many items they hold."""
    view = view_of(path)
    if not view.failures:
        return [], 0
    done = view.done_mask()
    return still_failed(view.failures, done), int(failed_mask(view.failures, done).sum())
