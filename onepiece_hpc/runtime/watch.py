"""Rank 0's main loop, watched from a thread of its own.

MPI calls have no deadline. Rank 0's loop makes some that need the peer to answer (a consumer's
credit is Put and flushed into the producer's window), and when the peer's host or link dies
without a word (no reset, the packets just stop) such a call never returns: the loop that would
find the dead ranks and name them is the one that is blocked. The watch finds them instead: when
the loop has not come round for the heartbeat timeout, it checks every rank as the loop would
(pulses go on while MPI blocks: runtime/pulse.py), and once ranks are found dead it gives the
loop's verdict and ends the job (`on_verdict`). A loop that is slow for another reason (a stalled
file system) while every rank is heard from is left alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from onepiece_hpc.runtime.liveness import Liveness, Verdict

WATCH_EVERY_S = 1.0


class LoopWatch:
    """Call `tick()` each time round the loop; `start()` before it, `stop()` after."""

    def __init__(self, liveness: Liveness, judge: Callable[[], Verdict], check: Callable[[], None],
                 on_verdict: Callable[[Verdict, float], None]) -> None:
        self.liveness = liveness
        self._judge, self._check, self._on_verdict = judge, check, on_verdict
        self._ticked = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loop watch", daemon=True)

    def tick(self) -> None:
        self._ticked = time.monotonic()

    def start(self) -> LoopWatch:
        self.tick()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * WATCH_EVERY_S)

    def blocked_for(self) -> float:
        return time.monotonic() - self._ticked

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_EVERY_S):
            if self.blocked_for() < self.liveness.heartbeat_timeout_s:
                continue
            self._check()
            if not self.liveness.settled():
                continue  # nobody dead yet, or the dead are still being told apart from the silent
            if self.blocked_for() < self.liveness.heartbeat_timeout_s or not self.liveness.claim_verdict():
                continue  # the loop came round after all: it gives the verdict itself
            self._on_verdict(self._judge(), self.blocked_for())
            return
