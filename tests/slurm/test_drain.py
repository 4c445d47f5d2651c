"""Rank 0's drain (runtime/drain.py): one request, a deadline, and what each signal means."""

from __future__ import annotations

import os
import signal

import pytest

from onepiece_hpc.exit_codes import ExitCode
from onepiece_hpc.runtime.drain import (
    Drain, drained_exit_code, explain, listen, run_outcome, shield, window_s,
)
from onepiece_hpc.runtime.interrupts import Terminated


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_drain_starts_once_and_gives_up_in_flight_units_at_its_deadline():
    clock = Clock()
    drain = Drain(window=20.0, clock=clock)
    assert not drain.is_set() and not drain.over(in_flight=0)
    assert drain.request("SIGUSR1")
    clock.now += 15.0
    assert not drain.request("SIGTERM")  # the same drain: the deadline does not move
    assert drain.cause == "SIGUSR1" and drain.remaining_s() == pytest.approx(5.0)
    assert drain.over(in_flight=0) and not drain.over(in_flight=3)
    clock.now += 5.0
    assert drain.expired() and drain.over(in_flight=3) and drain.given_up == 3
    assert "its deadline passed: 3 units in flight were given up" in explain(drain, remaining_items=7, committed_now=2)
    assert "before this run committed anything" in explain(drain, remaining_items=9, committed_now=0)


def test_stop_now_ends_the_drain_at_once():
    clock = Clock()
    drain = Drain(window=60.0, clock=clock)
    drain.request("SIGUSR1")
    drain.stop_now("SIGINT")
    assert drain.cut_short and drain.over(in_flight=4) and drain.cause == "SIGUSR1"


@pytest.mark.parametrize("seconds,window", [(10, 5.0), (30, 22.5), (120, 90.0), (600, 540.0), (86_400, 86_340.0)])
def test_the_window_keeps_a_margin_for_closing_and_requeueing(seconds, window):
    assert window_s(seconds) == window


def test_exit_codes_tell_progress_from_none():
    assert drained_exit_code(run_outcome("preempted", 4)) == ExitCode.DRAINED == 3
    assert drained_exit_code(run_outcome("preempted", 0)) == ExitCode.NO_PROGRESS == 5
    assert drained_exit_code(run_outcome("completed", 0)) is None


@pytest.fixture
def handlers():
    """Put this process's handlers back after a test that installs rank 0's."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)  # the handler runs before kill returns to Python code


def test_under_slurm_the_drain_signal_and_sigterm_drain_and_repeats_change_nothing(handlers):
    drain = listen("USR2", 120)
    _send(signal.SIGUSR2)
    _send(signal.SIGUSR2)  # the batch script repeats it until the run ends
    assert drain.cause == "SIGUSR2" and not drain.cut_short
    assert signal.getsignal(signal.SIGUSR1) is not signal.getsignal(signal.SIGUSR2)  # USR1 is left to the MPI
    _send(signal.SIGTERM)  # the job is being ended: stop now
    assert drain.cut_short and drain.expired()


def test_under_slurm_sigterm_alone_drains_and_its_repeats_do_not_cut_it_short(handlers):
    drain = listen("USR1", 120)
    _send(signal.SIGTERM)
    _send(signal.SIGTERM)  # slurmstepd and the batch script may both pass it on
    assert drain.cause == "SIGTERM" and not drain.cut_short and drain.remaining_s() > 80
    _send(signal.SIGINT)  # Ctrl-C: stop now
    assert drain.cut_short


def test_locally_sigterm_and_ctrl_c_stop_at_once_without_a_drain(handlers):
    listen(None, 120)
    with pytest.raises(Terminated):
        _send(signal.SIGTERM)
    listen(None, 120)
    with pytest.raises(KeyboardInterrupt):
        _send(signal.SIGINT)
    drain = listen(None, 120)
    _send(signal.SIGUSR1)
    assert drain.cause == "SIGUSR1"
    _send(signal.SIGTERM)  # during a drain: stop now, no exception in the middle of a commit
    assert drain.cut_short


def test_stage_ranks_outlive_the_drain_signal_and_sigterm_under_slurm(handlers):
    shield("USR2")
    assert signal.getsignal(signal.SIGUSR2) == signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
