"""Rank 0's loop watch (runtime/watch.py): a loop blocked past the heartbeat timeout while ranks
are dead gets the verdict from the watch; a loop that comes round, or one that is slow while
every rank is heard from, is left alone."""

from __future__ import annotations

import os
import threading
import time

import pytest

from onepiece_hpc.runtime.liveness import Liveness, Verdict
from onepiece_hpc.runtime.peers import RankInfo
from onepiece_hpc.runtime.telemetry import Telemetry
from onepiece_hpc.runtime.watch import WATCH_EVERY_S, LoopWatch

pytestmark = pytest.mark.timeout(60)

HOSTS = ["h1", "h1", "h2", "h2", "h3", "h3"]
TIMEOUT_S = 1.0


def _watched(silent: set[int]) -> tuple[LoopWatch, list[tuple[Verdict, float]], threading.Event]:
    """A watch over six ranks; those in `silent` are never heard from, the others all the time."""
    telemetry = Telemetry()
    peers = [RankInfo(rank, host, os.getpid()) for rank, host in enumerate(HOSTS)]
    liveness = Liveness(peers, telemetry, TIMEOUT_S, heartbeat_s=0.1)
    given: list[tuple[Verdict, float]] = []
    stop = threading.Event()

    def heard() -> None:
        while not stop.wait(0.05):
            telemetry.seen_at.update({rank: time.monotonic() for rank in range(1, 6) if rank not in silent})

    threading.Thread(target=heard, daemon=True).start()

    def where(rank: int) -> tuple[str, int]:
        return "decode", -1

    watch = LoopWatch(liveness, lambda: liveness.verdict(where, lambda unit: "no unit", "out.h5"),
                      lambda: liveness.check(where), lambda verdict, blocked: given.append((verdict, blocked)))
    return watch, given, stop


def test_a_blocked_loop_gets_the_verdict_from_its_watch_once():
    watch, given, stop = _watched(silent={4, 5})
    watch.start()
    time.sleep(TIMEOUT_S + 1.3 + 4 * WATCH_EVERY_S)  # past the timeout, the settling and a few rounds
    watch.stop()
    stop.set()
    assert len(given) == 1
    verdict, blocked = given[0]
    assert verdict.lost_hosts == ("h3",) and verdict.message.startswith("host h3 is lost")
    assert blocked >= TIMEOUT_S
    assert not watch.liveness.claim_verdict()  # the loop, should it come round, leaves it to the watch


def test_a_loop_that_comes_round_gives_its_own_verdict():
    watch, given, stop = _watched(silent={4, 5})
    watch.start()
    end = time.monotonic() + TIMEOUT_S + 4 * WATCH_EVERY_S
    while time.monotonic() < end:
        watch.tick()
        time.sleep(0.05)
    watch.stop()
    stop.set()
    assert given == [] and watch.liveness.claim_verdict()


def test_a_slow_loop_while_every_rank_is_heard_is_left_alone():
    watch, given, stop = _watched(silent=set())
    watch.start()
    time.sleep(TIMEOUT_S + 3 * WATCH_EVERY_S)
    watch.stop()
    stop.set()
    assert given == []
