"""Rank 0's drain: one request to stop, a deadline inside the signal window, a clean exit.

Slurm asks a job to stop with a signal: the drain signal (`slurm.drain_signal`, USR1 by default)
`drain_seconds` before the time limit, or SIGTERM (preemption, and sites that send nothing else).
Under Slurm either one starts the drain (locally, SIGTERM stops at once, as Ctrl-C does): rank 0
hands out no new unit and commits those in flight. The drain has a deadline,
`window_s(drain_seconds)` after the request: past it rank 0 stops waiting for units still in
flight, closes the output in order (the run recorded "preempted") and leaves, so the kill at the
end of the window never lands while files close.

One request per run: the same signal again changes nothing (Slurm, srun and the batch script may
each pass it on, and the script repeats it until the step ends). Ctrl-C, or SIGTERM during a
drain that the drain signal began (the job is being ended), cuts the drain short: stop now.

Exit codes of a drained run, for the batch script: ExitCode.DRAINED (3) when it committed something
(requeue it to go on), ExitCode.NO_PROGRESS (5) when it committed nothing (don't: a time limit that
can't hold one unit would otherwise requeue forever).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from onepiece_hpc.exit_codes import ExitCode
from onepiece_hpc.runtime.interrupts import Terminated, stop_handler

#: signals a job file may name as slurm.drain_signal
DRAIN_SIGNALS = ("USR1", "USR2", "TERM")
MIN_MARGIN_S = 5.0   # the least time kept back from the window for closing, leaving and requeueing
MAX_MARGIN_S = 60.0
ABORT_GRACE_S = 10.0  # leave_now exits anyway when MPI_Abort has not ended the process by then

PREEMPTED = "preempted"           # the run's status after a drain
NOTHING_COMMITTED = "no-progress"  # rank 0's outcome after a drain that committed nothing


def window_s(drain_seconds: float) -> float:
    """How long a drain waits for units in flight: the signal window less a quarter of it (at
    least 5 s, at most 60 s) for closing the output, leaving and requeueing."""
    margin = min(max(drain_seconds / 4.0, MIN_MARGIN_S), MAX_MARGIN_S)
    return max(drain_seconds - margin, 0.0)


class Drain:
    """A request to stop taking work, and the moment past which units in flight are given up.

    Offers `set()` and `is_set()` like the threading.Event it replaces; the clock is injected so
    the deadline can be tested without waiting.
    """

    def __init__(self, window: float = math.inf, clock: Callable[[], float] = time.monotonic) -> None:
        self._window, self._clock = window, clock
        self.cause: str | None = None      # what asked for the drain, e.g. "SIGUSR1"
        self.deadline: float | None = None
        self.cut_short = False
        self.given_up = 0  # units still in flight when the drain ended at its deadline

    def request(self, cause: str) -> bool:
        """Start the drain; True if this call started it (a repeated request changes nothing)."""
        if self.cause is not None:
            return False
        self.cause, self.deadline = cause, self._clock() + self._window
        return True

    def stop_now(self, cause: str) -> None:
        """End the drain at once: units in flight are given up."""
        self.request(cause)
        self.deadline = self._clock()
        self.cut_short = True

    def set(self) -> None:
        self.request("a drain request")

    def is_set(self) -> bool:
        return self.cause is not None

    def expired(self) -> bool:
        return self.deadline is not None and self._clock() >= self.deadline

    def remaining_s(self) -> float:
        return math.inf if self.deadline is None else max(self.deadline - self._clock(), 0.0)

    def over(self, in_flight: int) -> bool:
        """True once a drain has nothing left to wait for: no unit in flight, or its deadline
        passed (the units still in flight are then noted as given up)."""
        if not self.is_set():
            return False
        if in_flight and self.expired():
            self.given_up = in_flight
        return in_flight == 0 or self.expired()


def run_outcome(status: str, committed_now: int) -> str:
    """Rank 0's outcome: a drained run that committed nothing is told apart from one that did."""
    return NOTHING_COMMITTED if status == PREEMPTED and committed_now == 0 else status


def drained_exit_code(outcome: str) -> int | None:
    """The exit code for a drained outcome; None for any other."""
    return {PREEMPTED: ExitCode.DRAINED, NOTHING_COMMITTED: ExitCode.NO_PROGRESS}.get(outcome)


def explain(drain: Drain, remaining_items: int, committed_now: int) -> str:
    """What the drain did, in one line for the job's log."""
    if committed_now == 0:
        return (f"error: drained on {drain.cause} before this run committed anything; exit {ExitCode.NO_PROGRESS}: "
                f"the batch script does not requeue it, so a job whose time limit can't hold one unit does "
                f"not requeue forever; fix: raise slurm.time or lower slurm.drain_seconds, then submit it again "
                f"({remaining_items} items remain)")
    if not drain.given_up:
        how = "every dispatched unit was committed"
    elif drain.cut_short:
        how = f"stopped at once: {drain.given_up} units in flight were given up, to be generated again"
    else:
        how = f"its deadline passed: {drain.given_up} units in flight were given up, to be generated again"
    return f"drained on {drain.cause}: {how}; {remaining_items} items remain for the next run"


def _say(text: str) -> None:
    """One line on stderr, written at once: safe from a signal handler (no buffered stream)."""
    try:
        os.write(sys.stderr.fileno(), f"{text}\n".encode(errors="replace"))
    except (OSError, ValueError):
        pass


def listen(drain_signal: str | None, drain_seconds: float) -> Drain:
    """Rank 0: the drain signal starts a drain, and so does SIGTERM under Slurm (`drain_signal`
    given: the batch script and the Python API pass it). Without it (a local `onepiece run -n N`)
    the drain signal is USR1 and SIGTERM stops at once, as Ctrl-C does. During a drain, Ctrl-C, or
    SIGTERM after the drain signal, stops at once. Call from the main thread, as early as possible."""
    drain = Drain(window_s(drain_seconds))
    chosen = _signal(drain_signal or "USR1")
    term_drains = drain_signal is not None

    def on_request(signum, frame) -> None:
        name = signal.Signals(signum).name
        if drain.request(name):
            _say(f"rank 0: {name}: draining: no new work; units in flight have {drain.remaining_s():.0f} s "
                 f"to commit, then the output is closed and the run exits")
        elif signum == signal.SIGTERM and drain.cause != name:
            on_stop(signum, frame)

    @stop_handler
    def on_stop(signum, frame) -> None:
        name = signal.Signals(signum).name
        if not drain.is_set():
            if signum == signal.SIGTERM:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the stop is under way: a second one changes nothing
                raise Terminated()
            raise KeyboardInterrupt()
        if not drain.cut_short:
            drain.stop_now(name)
            _say(f"rank 0: {name} during the drain: stopping now; units in flight are given up")

    signal.signal(chosen, on_request)
    if chosen != signal.SIGTERM:
        signal.signal(signal.SIGTERM, on_request if term_drains else on_stop)
    signal.signal(signal.SIGINT, on_stop)
    return drain


def shield(drain_signal: str | None) -> None:
    """Ignore the drain signal and, under Slurm (`drain_signal` given), SIGTERM: a stage rank
    outlives both, since rank 0 alone decides when the job ends (its Shutdown, its abort, or srun
    ending the step when rank 0 leaves)."""
    signal.signal(_signal(drain_signal or "USR1"), signal.SIG_IGN)
    if drain_signal is not None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def leave_now(code: int, abort: Callable[[int], None]) -> None:
    """Past the deadline, with the output closed: end every rank at once (`abort`, e.g. MPI_Abort:
    the other ranks may wait on a unit that never comes) instead of saying goodbye to each. An abort
    that does not return (the MPI library blocked by a call to a dead peer) is cut short by exit."""
    timer = threading.Timer(ABORT_GRACE_S, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    abort(code)
    os._exit(code)


def _signal(name: str) -> signal.Signals:
    if name not in DRAIN_SIGNALS:
        raise ValueError(f"drain signal {name!r} is not one of {', '.join(DRAIN_SIGNALS)}")
    return signal.Signals[f"SIG{name}"]
