"""Pulses over UDP (runtime/pulse.py): rank 0 hears each stage rank without MPI, and only the
pulses of its own run."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from onepiece_hpc.runtime.pulse import PACKET, PulseListener, PulseSender
from support import hold_the_interpreter, pulsing

pytestmark = pytest.mark.timeout(60)


def _wait_heard(listener: PulseListener, rank: int, deadline_s: float = 10.0) -> float:
    end = time.monotonic() + deadline_s
    while rank not in listener.heard_at:
        assert time.monotonic() < end, f"rank {rank}'s pulse was never heard"
        time.sleep(0.02)
    return listener.heard_at[rank]


@pytest.fixture
def listener():
    opened = PulseListener.open(socket.gethostname())
    assert opened is not None, "no UDP socket on this host's name"
    yield opened
    opened.close()


def test_a_rank_pulses_every_interval_until_closed(listener):
    sender = PulseSender(3, socket.gethostname(), listener.port, listener.token, every_s=0.05).start()
    first = _wait_heard(listener, 3)
    time.sleep(0.3)
    assert listener.heard_at[3] > first  # it goes on
    sender.close()
    time.sleep(0.2)
    last = listener.heard_at[3]
    time.sleep(0.3)
    assert listener.heard_at[3] == last  # and stops when closed


def test_pulses_of_another_run_and_stray_datagrams_are_dropped(listener):
    stranger = PulseSender(4, "localhost", listener.port, b"\x00" * 8, every_s=0.02).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for junk in (b"", b"x" * 7, b"y" * 200, PACKET.pack(listener.token, 5, 0)[:-1]):
            raw.sendto(junk, ("localhost", listener.port))
        raw.sendto(PACKET.pack(listener.token, 6, 0), ("localhost", listener.port))
        _wait_heard(listener, 6)
    time.sleep(0.3)
    stranger.close()
    assert set(listener.heard_at) == {6}


def test_a_listener_held_with_its_process_blames_nobody_and_reads_what_waited(listener):
    """While a call holds the interpreter, the listener can't read: the pulses of a live rank
    (another process) wait in its socket. Whichever thread runs first after the hold, the rank is
    not silent for it: silence counts up to when the listener last read its socket, and the
    listener reads what waited as soon as it runs."""
    with pulsing(listener, [3]):
        _wait_heard(listener, 3, 30.0)
        for _ in range(3):
            hold_the_interpreter(2)
            assert listener.listened_until() - listener.heard_at[3] < 1.0
        held_until = time.monotonic()
        time.sleep(0.5)
        assert listener.heard_at[3] > held_until and listener.listened_until() > held_until


def test_a_rank_whose_rank_0_has_no_address_goes_on_without_pulses(caplog):
    sender = PulseSender(2, "no-such-host.invalid", 9, b"\x01" * 8, every_s=0.05).start()
    sender.close()
    assert "no pulse to rank 0" in caplog.text


class _RecordingListener(PulseListener):
    """A listener that notes each time it says its socket is empty, with when it last heard rank 3
    at that moment: the claims a watchdog may read, whenever it reads."""

    claims: list[tuple[float, float | None]]

    @property
    def _emptied_at(self) -> float:
        return self._claimed

    @_emptied_at.setter
    def _emptied_at(self, value: float) -> None:
        self._claimed = value
        self.__dict__.setdefault("claims", []).append((value, self.heard_at.get(3)))


def test_pulses_that_come_while_a_timed_out_read_waits_for_the_interpreter_are_read():
    """The listener's read times out while the rank is stopped; the interpreter is held as it
    raises the timeout, and the rank pulses again meanwhile. The listener reads those pulses before
    it says its socket is empty: it said so at once, and for a moment a live rank looked silent
    for seconds (a watchdog that looked then would have named it lost)."""
    listener = _RecordingListener.open(socket.gethostname())
    assert listener is not None, "no UDP socket on this host's name"
    try:
        with pulsing(listener, [3]) as sender:
            _wait_heard(listener, 3, 30.0)
            sender.send_signal(signal.SIGSTOP)
            time.sleep(0.3)
            resume = subprocess.Popen([sys.executable, "-c", "import os, signal, time; time.sleep(1.2); "
                                       f"os.kill({sender.pid}, signal.SIGCONT); print(time.monotonic())"],
                                      stdout=subprocess.PIPE, text=True)
            try:
                hold_the_interpreter(2)  # the read's 0.5 s timeout ends in here; the rank resumes at 1.2 s
                time.sleep(0.5)
            finally:
                sender.send_signal(signal.SIGCONT)
                resumed_at = float(resume.communicate(timeout=30)[0])
    finally:
        listener.close()
    after = [(at, heard) for at, heard in listener.claims if at > resumed_at + 0.2]  # a pulse or two since
    assert after, listener.claims
    assert all(heard is not None and at - heard < 1.0 for at, heard in after), (resumed_at, after)
