"""The reading end of a channel: takes messages from its own data ring in sequence order."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from onepiece_hpc.transport.errors import (
    ChannelClosed,
    CorruptMessage,
    PeerInfo,
    PeerTimeout,
    ProtocolMisuse,
)
from onepiece_hpc.transport.region import LocalRegion, RemoteRegion
from onepiece_hpc.transport.ring import DeviceBytes, EndState, RingLayout, _RingEnd
from onepiece_hpc.transport.wait import WaitPolicy, poll_until
from onepiece_hpc.transport.wire import (
    CreditRecord,
    CreditStatus,
    Header,
    Integrity,
    MessageKind,
    TensorSpec,
    WireError,
    decode_header,
    encode_credit,
    payload_checksum,
    read_stamp,
)

log = logging.getLogger(__name__)


class ReceivedMessage:
    """A message read in place: tensor views stay valid until `release()` (or leaving `with`)."""

    __slots__ = ("seq", "unit_id", "item_ids", "meta", "specs", "tensors", "_release", "released")

    def __init__(self, header: Header, tensors: dict[str, np.ndarray],
                 release: Callable[[int], None]) -> None:
        self.seq = header.seq
        self.unit_id = header.unit_id
        self.item_ids = header.item_ids
        self.meta = header.meta
        self.specs = header.tensors
        self.tensors = tensors
        self._release = release
        self.released = False

    def release(self) -> None:
        """Give the slot back to the producer; the tensor views must not be used afterwards."""
        if self.released:
            raise ProtocolMisuse(f"message seq {self.seq} was already released")
        self.released = True
        self._release(self.seq)

    def copy_tensors(self) -> dict[str, np.ndarray]:
        """Copies of the tensors that outlive the release."""
        return {name: array.copy() for name, array in self.tensors.items()}

    def __enter__(self) -> ReceivedMessage:
        return self

    def __exit__(self, *_exc: object) -> None:
        if not self.released:
            self.release()


class _SlotViews(NamedTuple):
    """Tensor views of one slot for one message layout (`specs` as decoded, payload at `at`)."""

    specs: tuple[TensorSpec, ...]
    at: int
    arrays: tuple[np.ndarray, ...]


class Consumer(_RingEnd):
    """The reading end: takes messages from its own data ring in sequence order."""

    def __init__(self, layout: RingLayout, ring: LocalRegion, credits: RemoteRegion,
                 peer: PeerInfo, policy: WaitPolicy = WaitPolicy(),
                 check_alive: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(layout, peer, policy, check_alive, clock, sleep)
        self.finished = False
        self._ring = ring
        self._view = memoryview(ring.buffer)
        self._credits = credits
        self._expected = 1
        self._released_ahead: set[int] = set()
        self._views: list[_SlotViews | None] = [None] * layout.slots
        self._bad_since: float | None = None
        self._bad_reason = ""

    @property
    def held(self) -> int:
        """Messages received and not yet released."""
        return self._expected - 1 - self._released - len(self._released_ahead)

    def try_receive(self) -> ReceivedMessage | None:
        """The next message if it has fully arrived, else None (also after end of stream)."""
        if not self._ready_to_receive():
            return None
        return self._probe()

    def receive(self, timeout_s: float | None = None) -> ReceivedMessage | None:
        """Wait (with a deadline) for the next message; None once the producer has closed."""
        if not self._ready_to_receive():
            return None
        found = poll_until(self._probe_or_end, self._policy, self._data_timeout,
                           timeout_s=timeout_s, check_alive=self._check_alive, clock=self._clock,
                           sleep=self._sleep)
        return found if isinstance(found, ReceivedMessage) else None

    def close(self) -> None:
        """Stop receiving; the producer's next send fails with ChannelClosed."""
        self._views = [None] * self.layout.slots
        if self.state is EndState.OPEN:
            self.state = EndState.CLOSED
            self._write_credit(CreditStatus.CLOSED)

    def _ready_to_receive(self) -> bool:
        if self.finished:
            return False
        if self.state is not EndState.OPEN:
            raise ChannelClosed(f"channel from producer {self.peer.describe()} is "
                                f"{self.state.value}; open a new channel to receive more")
        if self.held >= self.layout.slots:
            raise ProtocolMisuse(
                f"all {self.layout.slots} slots of the channel from producer {self.peer.describe()}"
                " are held; release a message before receiving another (waiting would deadlock)")
        return True

    def _probe_or_end(self) -> ReceivedMessage | bool | None:
        message = self._probe()
        if message is None and self.finished:
            return True
        return message

    def _probe(self) -> ReceivedMessage | None:
        self._ring.sync()
        seq = self._expected
        index = (seq - 1) % self.layout.slots
        stamp = read_stamp(self._view, self._bases[index])
        stale = seq - self.layout.slots if seq > self.layout.slots else 0
        if stamp == stale:
            return None
        try:
            if stamp != seq:
                raise WireError(f"slot stamp is {stamp}, expected {seq} or {stale}")
            header, tensors = self._validate(index, seq)
        except WireError as err:
            return self._not_yet_valid(seq, str(err))
        self._bad_since = None
        self._expected = seq + 1
        if header.kind is MessageKind.CLOSE:
            self.finished = True
            self._views = [None] * self.layout.slots
            self._release(seq)
            self._write_credit(CreditStatus.CLOSED)
            return None
        return ReceivedMessage(header, tensors, self._release)

    def _validate(self, index: int, seq: int) -> tuple[Header, dict[str, np.ndarray]]:
        header, at = decode_header(self._view, self._bases[index], self.layout.slot_bytes)
        if header.seq != seq or header.channel_id != self.layout.channel_id:
            raise WireError(f"header says seq {header.seq} on channel {header.channel_id}, "
                            f"expected seq {seq} on channel {self.layout.channel_id}")
        if header.integrity is not self.layout.integrity:
            raise WireError(f"header integrity {header.integrity.name}, channel uses "
                            f"{self.layout.integrity.name}")
        views = self._views[index]
        if views is None or views.specs is not header.tensors or views.at != at:
            views = self._views[index] = self._slot_views(index, header, at)
        if header.integrity is Integrity.FULL and \
                payload_checksum(views.arrays) != header.payload_sum:
            raise WireError("payload checksum mismatch")
        return header, {spec.name: array.view() for spec, array in zip(header.tensors,
                                                                        views.arrays)}

    def _slot_views(self, index: int, header: Header, at: int) -> _SlotViews:
        """Views of one slot's tensors, kept while messages of the same layout reuse the slot."""
        device_view = getattr(self._ring, "device_view", None)
        if device_view is not None:  # payloads live in this rank's accelerator memory
            start = self._bases[index] + at
            return _SlotViews(header.tensors, at, tuple(
                DeviceBytes(device_view(start + offset, spec.nbytes), spec.shape, spec.nbytes)
                for spec, offset in zip(header.tensors, header.offsets)))
        slot = self._ring.buffer[self._bases[index]: self._bases[index] + self.layout.slot_bytes]
        arrays = []
        for spec, offset in zip(header.tensors, header.offsets):
            raw = slot[at + offset: at + offset + spec.nbytes]
            arrays.append(raw.view(spec.dtype.storage).reshape(spec.shape))
        return _SlotViews(header.tensors, at, tuple(arrays))

    def _not_yet_valid(self, seq: int, reason: str) -> None:
        """A slot that fails validation may still be landing; after `settle_s` it is corrupt."""
        now = self._clock()
        if self._bad_since is None:
            self._bad_since = now
        if now - self._bad_since < self._policy.settle_s:
            return None
        self.state = EndState.FAILED
        self._write_credit(CreditStatus.FAILED)
        raise CorruptMessage(
            f"message seq {seq} from producer {self.peer.describe()} failed validation "
            f"({reason}) for {now - self._bad_since:.2f} s and was not consumed; the channel is "
            "closed: check that rank for memory corruption or a mismatched onepiece version")

    def _release(self, seq: int) -> None:
        if seq != self._released + 1:
            self._released_ahead.add(seq)
            return
        self._released = seq
        while self._released + 1 in self._released_ahead:
            self._released += 1
            self._released_ahead.discard(self._released)
        status = CreditStatus.OPEN if self.state is EndState.OPEN and not self.finished \
            else CreditStatus.CLOSED
        if self.state is not EndState.FAILED:
            self._write_credit(status)

    def _write_credit(self, status: CreditStatus) -> None:
        self._credits.publish(0, encode_credit(CreditRecord(self._released, status)))

    def _data_timeout(self, waited: float) -> PeerTimeout:
        return PeerTimeout(
            f"no message from producer {self.peer.describe()} within {waited:.1f} s (waiting for "
            f"seq {self._expected}): that rank died or stalled; check its log, or raise the wait "
            "deadline")
