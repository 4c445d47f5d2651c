"""Deadlines and backoff polling: spin briefly, then yield, then sleep with growing intervals.

Every wait in the transport goes through `poll_until`, so every wait has a deadline and no
waiter burns a core that a peer on the same node needs (8 ranks on 2 cores still progress).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class WaitPolicy:
    """How long to wait and how to back off while waiting."""

    timeout_s: float = 60.0
    spin_s: float = 50e-6
    yield_s: float = 200e-6
    first_sleep_s: float = 20e-6
    max_sleep_s: float = 1e-3
    liveness_every_s: float = 0.05
    settle_s: float = 0.2

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.max_sleep_s <= 0 or self.first_sleep_s <= 0:
            raise ValueError(f"wait times must be positive, got {self}")


class Backoff:
    """Pause schedule of one wait: 0 while spinning, -1 to yield the CPU, else seconds to sleep."""

    YIELD = -1.0

    def __init__(self, policy: WaitPolicy, start: float) -> None:
        self._policy = policy
        self._start = start
        self._sleep = policy.first_sleep_s

    def pause(self, now: float) -> float:
        waited = now - self._start
        if waited < self._policy.spin_s:
            return 0.0
        if waited < self._policy.spin_s + self._policy.yield_s:
            return self.YIELD
        pause = self._sleep
        self._sleep = min(self._sleep * 2.0, self._policy.max_sleep_s)
        return pause


def poll_until(
    probe: Callable[[], T | None],
    policy: WaitPolicy,
    on_timeout: Callable[[float], Exception],
    *,
    timeout_s: float | None = None,
    check_alive: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `probe` until it returns a value; raise `on_timeout(waited)` after the deadline.

    `check_alive` runs every `liveness_every_s` and raises if the peer is known to be dead.
    """
    found = probe()
    if found is not None:
        return found
    limit = policy.timeout_s if timeout_s is None else timeout_s
    start = clock()
    backoff = Backoff(policy, start)
    next_check = start + policy.liveness_every_s
    while True:
        found = probe()
        if found is not None:
            return found
        now = clock()
        if now - start >= limit:
            raise on_timeout(now - start)
        if check_alive is not None and now >= next_check:
            check_alive()
            next_check = now + policy.liveness_every_s
        pause = backoff.pause(now)
        if pause == Backoff.YIELD:
            os.sched_yield()
        elif pause > 0:
            sleep(min(pause, max(limit - (now - start), 0.0)))
