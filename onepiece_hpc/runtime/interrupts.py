"""SIGTERM (scancel, a time limit, a stopping node) stops a run the way Ctrl-C does: the unit in
progress is dropped, everything committed is synced, the run's record says how it ended.

Under Slurm, rank 0 of a staged run drains on SIGTERM instead (runtime/drain.py): it commits the
units in flight, up to a deadline, before it stops."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable

from onepiece_hpc.exit_codes import after_signal

#: how soon a stop that landed inside an import is sent again
RETRY_S = 0.05


class Terminated(KeyboardInterrupt):
    """The process was asked to stop with SIGTERM."""


def inside_import(frame) -> bool:
    """Whether the interrupted code runs under an import. An exception raised there can cross C++
    (torch's pybind11 modules run Python while they initialise), and C++ then aborts the process
    (SIGABRT) instead of stopping it."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def stop_handler(handler: Callable[[int, object], None]) -> Callable[[int, object], None]:
    """A signal handler that raises to stop the run, made to land where the stop can take effect:
    - landing inside an import, the signal is sent to this process again shortly instead, until it
      lands outside;
    - raised where Python can't pass an exception on (a finalizer, a weakref callback, an atexit
      function: Python prints "Exception ignored in ..." and goes on), the handler is put back and
      the signal sent again, so that the stop is not lost (the handler may have set the signal to
      be ignored before it raised)."""
    @functools.wraps(handler)
    def handle(signum: int, frame) -> None:
        if inside_import(frame):
            _send_again(signum)
            return
        installed = signal.getsignal(signum)
        try:
            handler(signum, frame)
        except BaseException as stop:
            stop._onepiece_signal = (signum, installed)  # for on_unraisable, should Python swallow it
            _catch_swallowed_stops()
            raise
    return handle


def _send_again(signum: int) -> None:
    timer = threading.Timer(RETRY_S, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


def _catch_swallowed_stops() -> None:
    """Put a hook for exceptions Python can't raise in front of the one in place, once."""
    if getattr(sys.unraisablehook, "_onepiece_stops", False):
        return
    previous = sys.unraisablehook

    def on_unraisable(unraisable) -> None:
        resend = getattr(unraisable.exc_value, "_onepiece_signal", None)
        if resend is None:
            previous(unraisable)
            return
        signum, installed = resend
        try:
            signal.signal(signum, installed)
        except ValueError:  # not the main thread: the handler is still in place
            pass
        _send_again(signum)

    on_unraisable._onepiece_stops = True
    sys.unraisablehook = on_unraisable


@stop_handler
def _raise(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the stop is under way: a second SIGTERM changes nothing
    raise Terminated()


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM into Terminated in the main thread (call from the main thread)."""
    signal.signal(signal.SIGTERM, _raise)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (128 + the signal's number, as shells report)."""
    return after_signal(signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
