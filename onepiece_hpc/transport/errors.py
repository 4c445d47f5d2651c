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
    """A write to the peer's memory failed in the fabric (its host died, its link is down);
    `peer` is blamed, so that rank 0 can tell the lost host from the ranks that talked to it."""

    def __init__(self, message: str, peer: PeerInfo) -> None:
        super().__init__(message)
        self.peer = peer


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
