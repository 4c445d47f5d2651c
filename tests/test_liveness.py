"""Rank 0's liveness verdicts: a lost host is named with its ranks, not the ranks that failed
talking to it; a rank's own error is reported as soon as every live rank is heard from."""

from __future__ import annotations

import time

from onepiece_hpc.runtime.liveness import SETTLE_S, Liveness
from onepiece_hpc.runtime.messages import Failure
from onepiece_hpc.runtime.peers import RankInfo
from onepiece_hpc.runtime.telemetry import Telemetry

#: rank 0 and one stage rank on h1, two ranks on each of h2 and h3
HOSTS = ["h1", "h1", "h2", "h2", "h3", "h3"]
STAGES = ["manager", "encode", "denoise", "denoise", "denoise", "decode"]


def _liveness(heard: dict[int, float], timeout_s: float = 60.0) -> Liveness:
    """Ranks last heard `heard[rank]` seconds ago; rank 0 watches them (pids that exist: ours)."""
    import os

    now = time.monotonic()
    telemetry = Telemetry(started=now - 100)
    telemetry.seen_at.update({rank: now - ago for rank, ago in heard.items()})
    peers = [RankInfo(rank, host, os.getpid()) for rank, host in enumerate(HOSTS)]
    return Liveness(peers, telemetry, timeout_s, heartbeat_s=1.0)


def _where(rank: int) -> tuple[str, int]:
    return STAGES[rank], 7


def _unit(unit: int) -> str:
    return f"unit {unit}"


def _transport_error(rank: int, peer: int = -1) -> Failure:
    return Failure(rank=rank, host=HOSTS[rank], stage=STAGES[rank], unit=7, peer=peer,
                   error="Exception: Other MPI error: Connection reset by remote peer")


def test_a_host_whose_ranks_fall_silent_together_is_named_as_lost():
    live = _liveness({1: 0.1, 2: 0.2, 3: 0.3, 4: 10.0, 5: 10.0})
    live.fail(_transport_error(3))
    live.first_failure_at = time.monotonic() - 2.0  # rank 3 failed two seconds ago; 4 and 5 were last heard before
    assert [p.rank for p in live.suspects()] == [4, 5]
    assert not live.settled()  # a moment more: the silent ranks might only be late
    live.first_failure_at = time.monotonic() - live.suspect_window_s
    live.telemetry.seen_at.update({1: time.monotonic(), 2: time.monotonic()})  # the others were heard since
    assert live.settled()
    verdict = live.verdict(_where, _unit, "out.h5")
    assert verdict.lost_hosts == ("h3",)
    assert verdict.message.startswith("host h3 is lost: every rank on it died at once (ranks 4 (denoise), 5 (decode)")
    assert "failed after it, talking to it: ranks 3" in verdict.message
    assert verdict.message.endswith("Finished items are kept in out.h5; run the same command again to resume")


def test_a_ranks_own_error_is_reported_once_every_live_rank_is_heard_from():
    live = _liveness({1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1, 5: 0.1})
    live.fail(Failure(rank=2, host="h2", stage="denoise", unit=7, error="RuntimeError: bad weights"))
    live.first_failure_at = time.monotonic() - SETTLE_S
    for rank in (1, 3, 4, 5):
        live.telemetry.seen_at[rank] = time.monotonic()
    assert live.suspects() == [] and live.settled()
    verdict = live.verdict(_where, _unit, "out.h5")
    assert verdict.lost_hosts == ()
    assert verdict.message.startswith("rank 2 on h2, stage denoise, unit 7: RuntimeError: bad weights")


def test_one_silent_rank_is_named_as_a_rank_not_as_its_host():
    live = _liveness({1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1, 5: 90.0}, timeout_s=60.0)
    live.check(_where)
    verdict = live.verdict(_where, _unit, "out.h5")
    assert verdict.lost_hosts == ()  # h3's other rank is alive
    assert verdict.message.startswith("rank 5 on h3, stage decode, unit 7: rank died: no heartbeat for 90 s")


def test_a_link_cut_silences_a_host_past_the_heartbeat_timeout():
    live = _liveness({1: 0.1, 2: 0.1, 3: 0.1, 4: 61.0, 5: 61.0}, timeout_s=60.0)
    assert not live.settled()
    live.check(_where)
    assert live.first_failure_at is not None
    verdict = live.verdict(_where, _unit, "out.h5")
    assert verdict.lost_hosts == ("h3",)
    assert "ranks 4 (denoise), 5 (decode): no heartbeat for 61 s" in verdict.message


def test_a_dead_rank_comes_before_ranks_that_blame_it():
    live = _liveness({1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1, 5: 0.1})
    live.fail(_transport_error(2, peer=1))
    live.fail(Failure(rank=1, host="h1", stage="encode", unit=7, error="rank died: its process 9 is gone"))
    verdict = live.verdict(_where, _unit, "out.h5")
    assert verdict.message.startswith("rank 1 on h1, stage encode, unit 7: rank died") and "also failed after it: rank 2" in verdict.message


def test_a_live_host_blocked_talking_to_the_lost_one_is_not_named_lost():
    """h3 died; h2's ranks fell silent too, blocked in the MPI library writing to it; rank 1's write
    to rank 5 failed and blames it: h3 is the lost host, h2's ranks are named as silent only."""
    live = _liveness({1: 0.1, 2: 10.0, 3: 10.0, 4: 10.0, 5: 10.0})
    live.fail(Failure(rank=1, host="h1", stage="encode", unit=7, peer=5,
                      error="PeerUnreachable: rank 5 (host h3, pid 9) can't be reached over mpi-rma"))
    live.first_failure_at = time.monotonic() - live.suspect_window_s
    live.telemetry.seen_at[1] = time.monotonic()
    verdict = live.verdict(_where, _unit, "out.h5")
    assert verdict.lost_hosts == ("h3",)
    assert verdict.message.startswith("host h3 is lost")
    assert "failed after it, talking to it: ranks 1" in verdict.message
    assert "silent too (blocked talking to it, or dead): ranks 2 on h2, 3 on h2" in verdict.message


def test_pulses_tell_a_live_host_blocked_in_mpi_from_the_lost_one():
    """A cut link: every MPI heartbeat stopped (the live ranks' too, blocked in the library talking
    to h3), but the live ranks still pulse over UDP: h3 alone is lost, nobody else is named."""
    from onepiece_hpc.runtime.pulse import PulseListener

    live = _liveness({1: 61.0, 2: 61.0, 3: 61.0, 4: 61.0, 5: 61.0}, timeout_s=60.0)
    live.pulse = PulseListener.open("localhost")
    try:
        live.pulse.heard_at.update({rank: time.monotonic() for rank in (1, 2, 3)})
        live.check(_where)
        live.first_failure_at -= SETTLE_S
        live.pulse.heard_at.update({rank: time.monotonic() for rank in (1, 2, 3)})
        assert live.settled()  # every rank not found dead was heard since
        verdict = live.verdict(_where, _unit, "out.h5")
    finally:
        live.pulse.close()
    assert verdict.lost_hosts == ("h3",)
    assert verdict.message.startswith("host h3 is lost: every rank on it died at once (ranks 4 (denoise), 5 (decode)")
    assert "silent too" not in verdict.message and "h2" not in verdict.message


def test_a_rank_0_held_by_a_call_that_keeps_the_interpreter_finds_nobody_dead_for_it():
    """An HDF5 flush to a stalled file system holds the GIL, the pulse listener's thread with it,
    for longer than the heartbeat timeout. Whichever of rank 0's threads runs first after it, no
    live rank is found dead for the hold; a rank that stopped pulsing still is."""
    from onepiece_hpc.runtime.pulse import PulseListener
    from support import hold_the_interpreter, pulsing

    live = _liveness({1: 100.0, 2: 100.0, 3: 100.0, 4: 100.0, 5: 100.0}, timeout_s=1.5)
    live.pulse = PulseListener.open("localhost")
    try:
        with pulsing(live.pulse, [1, 2, 3, 4, 5]):
            while len(live.pulse.heard_at) < 5:
                time.sleep(0.05)
            for _ in range(3):
                hold_the_interpreter(2)
                live.check(_where)
                assert live.failures == [], live.failures
        time.sleep(2.5)
        live.check(_where)
    finally:
        live.pulse.close()
    assert sorted(f.rank for f in live.failures) == [1, 2, 3, 4, 5]  # stopped pulsing: found dead
