"""Pulses: every stage rank tells rank 0 that it lives, over UDP, beside MPI.

The heartbeats (runtime/worker.py) travel over MPI. When a host or its link dies, MPI calls
towards it block, and the ranks that make them fall silent with it, on live hosts too (their
heartbeat threads wait inside the same MPI library): heartbeats alone cannot tell a dead host from
the live ones that talk to it. A pulse needs nothing of MPI: a 20-byte datagram a heartbeat
interval, from a thread of its own, to rank 0's host. Rank 0 hears them on a thread of its own,
so a main loop blocked in a call to a dead peer does not stop it knowing who lives
(runtime/watch.py acts then).

A call that holds the interpreter (an HDF5 flush to a stalled file system does: h5py keeps the
GIL through it) stops the listener too, while the datagrams wait in its socket. Silence is
therefore measured up to when the listener last emptied its socket (`listened_until`), not up to
now: a listener that could not listen blames nobody, and once it runs again it reads what
waited before anyone judges.

Rank 0 draws a random token per run; a datagram without it (another job's, a stray) is dropped,
and nothing received is ever decoded beyond three fixed-size integers. Where a pulse can't be set
up (rank 0's host name has no address, a socket is refused), liveness rests on the heartbeats
alone and the rank says so in its log.
"""

from __future__ import annotations

import logging
import secrets
import select
import socket
import struct
import threading
import time

log = logging.getLogger(__name__)

#: token (8 bytes), rank, sequence number; network byte order
PACKET = struct.Struct("!8sIQ")
TOKEN_BYTES = 8
LISTEN_POLL_S = 0.5  # how often the listener looks at its stop flag while nothing arrives


def _family_of(host: str) -> socket.AddressFamily:
    """The address family `host` resolves to first (IPv4 where it has both)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    families = [info[0] for info in infos]
    return socket.AF_INET if socket.AF_INET in families else families[0]


class PulseListener:
    """Rank 0's end: a UDP socket on every address of its host, and when each rank last pulsed."""

    def __init__(self, sock: socket.socket, token: bytes) -> None:
        self._sock = sock
        self.token = token
        self.port = sock.getsockname()[1]
        self.heard_at: dict[int, float] = {}  # rank -> monotonic time of its last pulse
        self._emptied_at = time.monotonic()  # when the socket was last read to the end
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="pulse listener", daemon=True)

    @classmethod
    def open(cls, host: str) -> PulseListener | None:
        """Listen for the run's pulses on `host` (rank 0's host name); None where that can't be."""
        try:
            family = _family_of(host)
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind(("::" if family == socket.AF_INET6 else "", 0))
        except OSError as err:
            log.warning("no pulse socket on %s (%s): rank 0 tells live ranks by their MPI heartbeats only, "
                        "so a lost host may be named together with live hosts that talk to it", host, err)
            return None
        sock.settimeout(LISTEN_POLL_S)
        listener = cls(sock, secrets.token_bytes(TOKEN_BYTES))
        listener._thread.start()
        return listener

    def listened_until(self) -> float:
        """The monotonic time up to which every pulse sent has been read (now, if the listener
        has stopped): what a rank's silence is measured against."""
        return self._emptied_at if self._thread.is_alive() else time.monotonic()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                try:
                    self._take(self._sock.recv(64))
                except TimeoutError:  # raised once this thread had the interpreter again: pulses may wait
                    pass
                self._emptied_at = self._read_what_waited()
            except (OSError, ValueError):
                return  # closed

    def _read_what_waited(self) -> float:
        """Read every pulse that waits; returns the time just before the look that found the socket
        empty (not after it: a call holding the interpreter may keep this thread from reading the
        clock for seconds, while pulses arrive)."""
        while True:
            looked_at = time.monotonic()
            if not select.select([self._sock], [], [], 0)[0]:
                return looked_at
            self._take(self._sock.recv(64))

    def _take(self, data: bytes) -> None:
        if len(data) != PACKET.size:
            return
        token, rank, _ = PACKET.unpack(data)
        if secrets.compare_digest(token, self.token):
            self.heard_at[rank] = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * LISTEN_POLL_S)
        self._sock.close()


class PulseSender:
    """A stage rank's end: a datagram to rank 0 every `every_s` seconds, until closed."""

    def __init__(self, rank: int, host: str, port: int, token: bytes, every_s: float) -> None:
        self._packet = (rank, token)
        self._every_s = every_s
        self._target = (host, port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, name="pulse", daemon=True)

    def start(self) -> PulseSender:
        self._thread.start()
        return self

    def _send(self) -> None:
        try:
            info = socket.getaddrinfo(*self._target, family=_family_of(self._target[0]), type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(info[0], socket.SOCK_DGRAM)
        except OSError as err:
            log.warning("no pulse to rank 0 at %s:%d (%s): rank 0 tells this rank lives by its MPI heartbeats "
                        "only", *self._target, err)
            return
        rank, token = self._packet
        sequence = 0
        with sock:
            while not self._stop.is_set():
                try:
                    sock.sendto(PACKET.pack(token, rank, sequence), info[4])
                except OSError:  # a link that is down: the silence is the message
                    pass
                sequence += 1
                self._stop.wait(self._every_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self._every_s + 1.0)
