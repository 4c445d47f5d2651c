"""SIGTERM (scancel, a time limit, a stopping node) stops a run the way Ctrl-C does: the unit in
progress is dropped, everything committed is synced, the run's record says how it ended.

Under Slurm, rank 0 of a staged run drains on SIGTERM instead (runtime/drain.py): it commits the
units in flight, up to a deadline, before it stops."""

from __future__ import annotations

import signal

from onepiece_hpc.exit_codes import after_signal


class Terminated(KeyboardInterrupt):
    """The process was asked to stop with SIGTERM."""


def _raise(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the stop is under way: a second SIGTERM changes nothing
    raise Terminated()


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM into Terminated in the main thread (call from the main thread)."""
    signal.signal(signal.SIGTERM, _raise)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (128 + the signal's number, as shells report)."""
    return after_signal(signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
