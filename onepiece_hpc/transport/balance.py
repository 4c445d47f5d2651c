"""Join-the-shortest-queue: a producer sends to the consumer with the most free credits."""

from __future__ import annotations

from collections.abc import Sequence


def pick_consumer(free_slots: Sequence[int], start: int = 0) -> int | None:
    """Index of the consumer with the most free slots, or None if every ring is full.

    Ties go to the first index at or after `start` (pass a rotating start to spread ties).
    """
    best: int | None = None
    count = len(free_slots)
    for step in range(count):
        index = (start + step) % count
        if free_slots[index] > 0 and (best is None or free_slots[index] > free_slots[best]):
            best = index
    return best
