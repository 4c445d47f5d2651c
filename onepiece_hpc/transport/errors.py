"""Transport errors: each names the peer (rank, host) and says what to do about it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PeerInfo:
    """Who is at the other end of a channel, for error messages and liveness checks."""

    rank: int
    host: str
    pid: int

    def describe(self) -> str:
        return f"rank {self.rank} (host {self.host}, pid {self.pid})"


class TransportError(Exception):
    """Base class of every error raised by the transport layer."""


class PeerTimeout(TransportError):
    """A wait for data or credits passed its deadline: the peer died, stalled or stopped releasing."""


class PeerDied(TransportError):
    """The fabric saw that the peer process no longer exists."""


class PeerUnreachable(TransportError):
    """A call that needs a peer failed in the fabric or the MPI library (a host died, a link is
    down): a write to the peer's memory, a message sent to it, a poll. `peer` is the rank the call
    was for, where it names one (None for a poll of any), so that rank 0 can tell the lost host
    from the ranks that talked to it."""

    def __init__(self, message: str, peer: PeerInfo | None = None) -> None:
        super().__init__(message)
        self.peer = peer


def mpi_reason(err: Exception) -> str:
    """The cause an MPI error gives, for a message of ours: MPICH's stack of lines ends with it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


class CorruptMessage(TransportError):
    """A slot failed validation (stamp, header checksum, payload checksum or layout); never consumed."""


class MessageTooLarge(TransportError):
    """A message does not fit in one slot; slots are sized from the stage's declared outputs."""


class ChannelClosed(TransportError):
    """The channel was closed by its peer or by this side; no more messages can pass."""


class ProtocolMisuse(TransportError):
    """The caller broke a channel rule (e.g. receiving while holding all K slots)."""


class SetupError(TransportError):
    """Channel set-up or tear-down failed (bad handshake message, fabric unavailable, timeout)."""
