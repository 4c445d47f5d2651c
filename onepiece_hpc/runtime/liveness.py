"""Rank 0's view of which ranks live, and the one message that names why a run stopped.

A rank is dead when its process is gone (same host as rank 0), when it has sent neither heartbeat
nor pulse (runtime/pulse.py) for the heartbeat timeout, or when, after another rank failed, it stays silent while every live rank
is heard from again. The last case is a lost host: its ranks die together and without a word,
and the ranks that talk to them fail at once with transport errors that blame nobody by name. So
a first failure is not reported at once: rank 0 waits a moment (SETTLE_S) for others, and longer
(up to `suspect_window_s`) while ranks that were not heard from since the failure remain; those
still silent then are the cause. A host whose every rank is dead is named as the lost host.

Rank 0's own calls meet a lost host too (a credit written back to a producer there, a control
message sent to it): such a transport error is not the verdict but a question for it, asked the
same way (`unreachable`): it counts as a first failure that blames the peer, and the verdict
names the lost host when the peer stays silent, or the error itself when the peer is heard from
again. A rank counts as heard from since a failure only from `late_s` after it: its heartbeat
sent before the failure may be read from MPI's queue a moment after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from onepiece_hpc.runtime.messages import Failure
from onepiece_hpc.processes import process_alive
from onepiece_hpc.runtime.peers import RankInfo
from onepiece_hpc.runtime.pulse import PulseListener
from onepiece_hpc.runtime.telemetry import Telemetry

SETTLE_S = 1.0  # after a first failure, wait this long for others, then report the root cause
SUSPECT_HEARTBEATS = 3  # ...or, while some ranks are silent since it, this many heartbeat intervals more

#: the error of a rank found dead (by rank 0, not by the rank itself); names start with it
DIED = "rank died: "
#: the stage of a failure of rank 0's own (a call of its loop met a dead peer)
MANAGER = "manager"
IN_FLIGHT_SHOWN = 8  # the verdict names this many units in flight, then counts the rest


@dataclass(frozen=True)
class Verdict:
    """Why the run stopped: one message, and the hosts lost with every rank they ran."""

    message: str
    lost_hosts: tuple[str, ...] = ()


@dataclass
class Liveness:
    """Failures as they arrive, deaths as rank 0 finds them, and when to stop and say which."""

    peers: list[RankInfo]
    telemetry: Telemetry
    heartbeat_timeout_s: float
    heartbeat_s: float = 1.0
    pulse: PulseListener | None = None  # pulses count as heartbeats: they go on while MPI blocks
    failures: list[Failure] = field(default_factory=list)
    finished: set[int] = field(default_factory=set)
    first_failure_at: float | None = None
    timed_out: set[int] = field(default_factory=set)  # ranks silent past the heartbeat timeout
    _judged: threading.Lock = field(default_factory=threading.Lock)  # held by whoever gives the verdict

    @property
    def suspect_window_s(self) -> float:
        return SETTLE_S + SUSPECT_HEARTBEATS * self.heartbeat_s

    @property
    def late_s(self) -> float:
        """How long after a failure a rank heard from may still have spoken before it (half a beat)."""
        return self.heartbeat_s / 2

    def heard_at(self, rank: int) -> float:
        """When `rank` was last heard from: its last heartbeat or pulse (the start before either)."""
        seen = self.telemetry.seen_at.get(rank, self.telemetry.started)
        if self.pulse is not None:
            seen = max(seen, self.pulse.heard_at.get(rank, seen))
        return seen

    def silent_for(self, rank: int) -> float:
        """How long `rank` has not been heard from, up to when its pulses were last all read (a
        listener held by a call that keeps the interpreter has heard nothing: runtime/pulse.py)."""
        until = time.monotonic() if self.pulse is None else min(time.monotonic(), self.pulse.listened_until())
        return max(0.0, until - self.heard_at(rank))

    def claim_verdict(self) -> bool:
        """True for the one caller that gives the verdict (rank 0's main loop, or its watch when the
        loop is blocked); False for any later one."""
        return self._judged.acquire(blocking=False)

    def fail(self, failure: Failure) -> None:
        self.failures.append(failure)
        if self.first_failure_at is None:
            self.first_failure_at = time.monotonic()

    def unreachable(self, error: str, peer: int = -1) -> bool:
        """A call of rank 0's own met a dead peer (`error`, blaming rank `peer`; -1: none named):
        recorded as rank 0's failure, once a peer (True the first time), for the verdict to tell
        whether the peer's host is lost (see the module's docstring)."""
        if any(f.rank == self.peers[0].rank and f.peer == peer for f in self.failures):
            return False
        self.fail(Failure(rank=self.peers[0].rank, host=self.peers[0].host, stage=MANAGER, unit=-1, error=error,
                          peer=peer))
        return True

    def _accounted(self, rank: int) -> bool:
        return rank in self.finished or any(f.rank == rank for f in self.failures)

    def check(self, where: Callable[[int], tuple[str, int]]) -> None:
        """Record ranks found dead: gone (rank 0's host) or silent past the timeout. `where(rank)`:
        the stage (as said) and unit the rank was on."""
        host = self.peers[0].host
        for peer in self.peers[1:]:
            if self._accounted(peer.rank):
                continue
            gone = peer.host == host and not process_alive(peer.pid)
            silent = self.silent_for(peer.rank)
            if gone or silent > self.heartbeat_timeout_s:
                why = (f"its process {peer.pid} is gone (killed or crashed)" if gone
                       else f"no heartbeat for {silent:.0f} s (it died, hangs, or its host or link is lost)")
                if not gone:
                    self.timed_out.add(peer.rank)
                self._dead(peer, where, why)

    def _dead(self, peer: RankInfo, where: Callable[[int], tuple[str, int]], why: str) -> None:
        stage, unit = where(peer.rank)
        self.fail(Failure(rank=peer.rank, host=peer.host, stage=stage, unit=unit, error=DIED + why))

    def suspects(self) -> list[RankInfo]:
        """Ranks not heard from since the first failure (none before one)."""
        if self.first_failure_at is None:
            return []
        since = self.first_failure_at + self.late_s
        return [p for p in self.peers[1:] if not self._accounted(p.rank) and self.heard_at(p.rank) < since]

    def settled(self, now: float | None = None) -> bool:
        """True once the failures so far are the whole story (see the module's docstring)."""
        if self.first_failure_at is None:
            return False
        waited = (time.monotonic() if now is None else now) - self.first_failure_at
        return waited >= self.suspect_window_s or (waited >= SETTLE_S and not self.suspects())

    def verdict(self, where: Callable[[int], tuple[str, int]], describe_unit: Callable[[int], str],
                output: str, in_flight: Sequence[int] = ()) -> Verdict:
        """The one message: the lost host or the rank that failed first on its own, then the rest,
        the units in flight (`in_flight`: dispatched, not committed) and how to resume."""
        waited = time.monotonic() - (self.first_failure_at or time.monotonic())
        for peer in self.suspects() if waited >= self.suspect_window_s else ():
            silent = self.silent_for(peer.rank)
            self._dead(peer, where, f"no heartbeat for {silent:.0f} s, since before another rank failed, "
                                    "while every live rank was heard from")
        lost = self._lost_hosts()
        tail = _in_flight(in_flight, describe_unit) + \
            f". Finished items are kept in {output}; run the same command again to resume"
        if lost:
            dead = [f for f in self.failures if f.host in lost and f.error.startswith(DIED)]
            parts = []
            for host in lost:
                mine = sorted((f for f in dead if f.host == host), key=lambda f: f.rank)
                ranks = ", ".join(f"{f.rank} ({f.stage})" for f in mine)
                parts.append(f"host {host} is lost: every rank on it died at once (ranks {ranks}: "
                             f"{mine[0].error.removeprefix(DIED)})")
            others = [f for f in self.failures if f.host not in lost]
            failed = sorted(f.rank for f in others if not f.error.startswith(DIED))
            silent = sorted(f"{f.rank} on {f.host}" for f in others if f.error.startswith(DIED))
            after = f"; failed after it, talking to it: ranks {', '.join(map(str, failed))}" if failed else ""
            after += (f"; silent too (blocked talking to it, or dead): ranks {', '.join(silent)}" if silent else "")
            return Verdict("; ".join(parts) + after + tail, tuple(lost))
        blamed = {f.peer for f in self.failures if f.peer >= 0}
        # a rank found dead, or one that raised on its own, before ranks that blame a peer
        ordered = sorted(self.failures, key=lambda f: (not f.error.startswith(DIED), f.peer >= 0,
                                                       f.rank not in blamed))
        root = ordered[0]
        others = [f"rank {f.rank}" for f in ordered[1:]]
        also = f"; also failed after it: {', '.join(others)}" if others else ""
        if root.rank == self.peers[0].rank:  # rank 0's own call failed; the peer it blames was heard from since
            blamed_peer = next((p for p in self.peers if p.rank == root.peer), None)
            heard = (f" (rank {root.peer} was heard from since, so its host lives: check the link between "
                     f"{root.host} and {blamed_peer.host})" if blamed_peer else "")
            return Verdict(f"rank {root.rank} (Node Manager) on {root.host}: {root.error}{heard}{also}{tail}")
        return Verdict(f"rank {root.rank} on {root.host}, stage {root.stage}, {describe_unit(root.unit)}: "
                       f"{root.error}{also}{tail}")

    def _lost_hosts(self) -> list[str]:
        """Hosts other than rank 0's with two or more ranks, every one found dead (one rank alone
        dying says nothing of its host). Where failures blame ranks by name (a write to them
        failed), only the hosts of blamed ranks, or of ranks silent past the heartbeat timeout,
        are lost: the ranks of a live host can fall silent too, blocked in the MPI library while
        it talks to the dead one."""
        dead = {f.rank for f in self.failures if f.error.startswith(DIED)}
        hosts: dict[str, list[int]] = {}
        for peer in self.peers[1:]:
            hosts.setdefault(peer.host, []).append(peer.rank)
        lost = [h for h, ranks in hosts.items()
                if h != self.peers[0].host and len(ranks) > 1 and all(r in dead for r in ranks)]
        host_of = {p.rank: p.host for p in self.peers}
        blamed = {host_of[f.peer] for f in self.failures if f.peer in host_of}
        if blamed:
            lost = [h for h in lost if h in blamed or all(r in self.timed_out for r in hosts[h])]
        return sorted(lost)


def _in_flight(units: Sequence[int], describe_unit: Callable[[int], str]) -> str:
    """'. Units in flight ...' for the verdict ('' when none): what a resume runs again."""
    if not len(units):
        return ""
    shown = ", ".join(describe_unit(int(unit)) for unit in units[:IN_FLIGHT_SHOWN])
    more = f" and {len(units) - IN_FLIGHT_SHOWN} more" if len(units) > IN_FLIGHT_SHOWN else ""
    return f". Units in flight, not committed: {shown}{more}"
