"""The double-ring channel as pure logic: one producer, one consumer, K slots of S bytes.

Data ring in the consumer's memory, credit record in the producer's memory. The producer
writes payload, then header, then publishes the slot's sequence stamp; the consumer polls its
own memory for the stamp it expects, validates the slot, hands out zero-copy views and, on
release, writes back how many slots it has released. Sequence numbers start at 1 and only
grow, so a slot left from an earlier lap (stamp = seq - K) is never taken for a fresh one.
At most K messages are in flight, and every wait has a deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import numpy as np

from onepiece_hpc.transport.errors import (
    ChannelClosed, CorruptMessage, MessageTooLarge, PeerInfo, PeerTimeout, ProtocolMisuse,
)
from onepiece_hpc.transport.region import LocalRegion, RemoteRegion
from onepiece_hpc.transport.wait import WaitPolicy, poll_until
from onepiece_hpc.transport.wire import (
    ALIGN, MAX_ITEMS, MAX_META_BYTES, MAX_NAME_BYTES, MAX_NDIM, MAX_TENSORS, STAMP_BYTES,
    CreditRecord, CreditStatus, DType, Header, HeaderEncoder, Integrity, MessageKind, TensorSpec,
    WireError, checksum_update, decode_credit, decode_header, encode_credit, encode_stamp,
    payload_checksum, payload_start, read_stamp, tensor_offsets,
)

log = logging.getLogger(__name__)

WRITE_CHUNK = 256 * 1024  # copy and checksum in cache-sized pieces (a multiple of 4 KiB)


@dataclass(frozen=True)
class RingLayout:
    """Shape of one channel, agreed by both ends at set-up."""

    slots: int
    slot_bytes: int
    channel_id: int = 0
    integrity: Integrity = Integrity.FULL

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"a ring needs at least 1 slot, got {self.slots}")
        if self.slot_bytes < 256 or self.slot_bytes % ALIGN:
            raise ValueError(f"slot size must be a multiple of {ALIGN} and at least 256 bytes, "
                             f"got {self.slot_bytes}; size it with slot_bytes_for(specs)")

    @property
    def data_bytes(self) -> int:
        return self.slots * self.slot_bytes

    def slot_offset(self, seq: int) -> int:
        return (seq - 1) % self.slots * self.slot_bytes


CREDIT_REGION_BYTES = 64


@dataclass(frozen=True)
class TensorOut:
    """A tensor to send: numpy array plus its element type (bfloat16 as uint16 storage)."""

    name: str
    array: np.ndarray
    dtype: DType

    @classmethod
    def of(cls, name: str, array: np.ndarray, dtype: DType | None = None) -> TensorOut:
        chosen = DType.of(array) if dtype is None else dtype
        if array.dtype.itemsize != chosen.itemsize:
            raise TypeError(f"tensor {name!r}: array of {array.dtype} cannot carry {chosen.name}")
        return cls(name, np.ascontiguousarray(array), chosen)


class _Plan(NamedTuple):
    """How one message layout is written: each tensor's offset in the slot, and its header."""

    offsets: tuple[int, ...]
    header: HeaderEncoder


class EndState(Enum):
    """Life of one end of a channel: OPEN -> CLOSED (orderly) or FAILED (error seen)."""

    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"


class Producer:
    """The writing end: sends messages into the consumer's data ring as credits allow."""

    def __init__(self, layout: RingLayout, credits: LocalRegion, ring: RemoteRegion,
                 peer: PeerInfo, policy: WaitPolicy = WaitPolicy(),
                 check_alive: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.layout = layout
        self.peer = peer
        self.state = EndState.OPEN
        self._credits = credits
        self._credit_view = memoryview(credits.buffer)
        self._ring = ring
        self._policy = policy
        self._check_alive = check_alive
        self._clock = clock
        self._sleep = sleep
        self._next_seq = 1
        self._released = 0
        self._bases = [layout.slot_offset(seq) for seq in range(1, layout.slots + 1)]
        self._full = layout.integrity is Integrity.FULL
        self._plans: dict[tuple, _Plan] = {}
        self._close_plan = self._plan(MessageKind.CLOSE, (), 0, 0)

    @property
    def in_flight(self) -> int:
        return self._next_seq - 1 - self._released

    def free_slots(self) -> int:
        """Slots the producer may fill now (reads only its own memory; never waits)."""
        self._refresh_credits()
        return self.layout.slots - self.in_flight

    def try_send(self, tensors: Mapping[str, np.ndarray] | Sequence[TensorOut], *,
                 unit_id: int = 0, item_ids: Sequence[int] = (), meta: bytes = b"") -> int | None:
        """Send if a slot is free now; return the sequence number, or None without waiting."""
        arrays, plan = self._prepare(tensors, item_ids, meta)
        if self._probe_slot() is None:
            return None
        return self._write(arrays, plan, unit_id, item_ids, meta)

    def send(self, tensors: Mapping[str, np.ndarray] | Sequence[TensorOut], *,
             unit_id: int = 0, item_ids: Sequence[int] = (), meta: bytes = b"",
             timeout_s: float | None = None) -> int:
        """Send one message, waiting (with a deadline) for a free slot; return its sequence number."""
        arrays, plan = self._prepare(tensors, item_ids, meta)
        if self.in_flight >= self.layout.slots:
            self._wait_for_slot(timeout_s)
        return self._write(arrays, plan, unit_id, item_ids, meta)

    def finish(self, timeout_s: float | None = None) -> None:
        """Send end-of-stream (waiting for a free slot) without waiting for the consumer."""
        if self.state is not EndState.OPEN:
            return
        try:
            self._wait_for_slot(timeout_s)
        except ChannelClosed:
            return
        self._write([], self._close_plan, 0, (), b"")
        self.state = EndState.CLOSED

    def acknowledged(self) -> bool:
        """Whether the consumer has closed and released every message (never waits)."""
        record = self._refresh_credits()
        return record is not None and record.status is not CreditStatus.OPEN \
            and self.in_flight == 0

    def close(self, timeout_s: float | None = None) -> None:
        """Send end-of-stream and wait until the consumer has released every message."""
        self.finish(timeout_s)
        poll_until(lambda: True if self.acknowledged() else None, self._policy,
                   self._credit_timeout, timeout_s=timeout_s, check_alive=self._check_alive,
                   clock=self._clock, sleep=self._sleep)

    def _prepare(self, tensors: Mapping[str, np.ndarray] | Sequence[TensorOut],
                 item_ids: Sequence[int], meta: bytes) -> tuple[list[np.ndarray], _Plan]:
        """Check a DATA message and find its plan (cached per layout); return arrays and plan."""
        if self.state is not EndState.OPEN:
            raise ChannelClosed(f"channel to consumer {self.peer.describe()} is {self.state.value}; "
                                "open a new channel to send more")
        arrays, described = [], []  # one plain loop: this runs for every message
        if isinstance(tensors, Mapping):
            for name, array in tensors.items():
                array = np.ascontiguousarray(array)
                arrays.append(array)
                described.append((name, array.shape, DType.of(array)))
        else:
            for out in tensors:
                arrays.append(out.array)
                described.append((out.name, out.array.shape, out.dtype))
        if item_ids and not all(0 <= i < 2**64 for i in item_ids):
            raise ValueError(f"item ids must lie in 0..2**64-1, got {list(item_ids)}")
        key = (tuple(described), len(item_ids), len(meta))
        plan = self._plans.get(key)
        if plan is None:
            _check_message(described, item_ids, meta)
            specs = tuple(TensorSpec(name, shape, dtype) for name, shape, dtype in described)
            plan = self._plan(MessageKind.DATA, specs, len(item_ids), len(meta))
            if len(self._plans) < 64:
                self._plans[key] = plan
        return arrays, plan

    def _plan(self, kind: MessageKind, specs: tuple[TensorSpec, ...], n_items: int,
              meta_len: int) -> _Plan:
        offsets, payload_len = tensor_offsets(specs)
        header = HeaderEncoder(kind, self.layout.integrity, self.layout.channel_id, specs, offsets,
                               payload_len, n_items, meta_len)
        start = payload_start(header.size)
        if start + payload_len > self.layout.slot_bytes:
            raise MessageTooLarge(
                f"message of {start + payload_len} bytes ({payload_len} payload + {start} header; "
                f"tensors {[(s.name, s.shape, s.dtype.name) for s in specs]}) does not fit a "
                f"{self.layout.slot_bytes}-byte slot of the channel to consumer "
                f"{self.peer.describe()}; messages are never split: size slots with "
                "slot_bytes_for() from the stage's declared outputs")
        return _Plan(tuple(start + offset for offset in offsets), header)

    def _write(self, arrays: list[np.ndarray], plan: _Plan, unit_id: int,
               item_ids: Sequence[int], meta: bytes) -> int:
        seq = self._next_seq
        base = self._bases[(seq - 1) % self.layout.slots]
        ring = self._ring
        crc = 0
        for array, offset in zip(arrays, plan.offsets):
            data = array.reshape(-1).view(np.uint8)
            for lo in range(0, len(data), WRITE_CHUNK):
                chunk = data[lo: lo + WRITE_CHUNK]
                if self._full:
                    crc = checksum_update(chunk, crc)
                ring.write(base + offset + lo, chunk)
        ring.write(base + STAMP_BYTES, plan.header.encode(seq, unit_id, item_ids, meta, crc))
        ring.publish(base, encode_stamp(seq))
        self._next_seq = seq + 1
        return seq

    def _refresh_credits(self) -> CreditRecord | None:
        self._credits.sync()
        record = decode_credit(self._credit_view)
        if record is None:
            return None
        if record.released > self._next_seq - 1:
            self.state = EndState.FAILED
            raise CorruptMessage(
                f"credit record from consumer {self.peer.describe()} releases {record.released} "
                f"slots but only {self._next_seq - 1} were sent; the credit memory was overwritten")
        self._released = max(self._released, record.released)
        return record

    def _probe_slot(self) -> bool | None:
        if self.in_flight < self.layout.slots:
            return True
        record = self._refresh_credits()
        if record is not None and record.status is not CreditStatus.OPEN:
            self.state = EndState.FAILED if record.status is CreditStatus.FAILED else EndState.CLOSED
            reason = ("rejected a corrupt message" if record.status is CreditStatus.FAILED
                      else "closed the channel")
            raise ChannelClosed(f"consumer {self.peer.describe()} {reason}; no more messages can "
                                "be sent on this channel (see that rank's log)")
        return True if self.in_flight < self.layout.slots else None

    def _wait_for_slot(self, timeout_s: float | None) -> None:
        poll_until(self._probe_slot, self._policy, self._credit_timeout, timeout_s=timeout_s,
                   check_alive=self._check_alive, clock=self._clock, sleep=self._sleep)

    def _credit_timeout(self, waited: float) -> PeerTimeout:
        return PeerTimeout(
            f"no credit from consumer {self.peer.describe()} within {waited:.1f} s "
            f"({self.in_flight} of {self.layout.slots} slots unreleased): that rank died, stalled "
            "or holds messages without releasing them; check its log, or raise the wait deadline")


def _check_message(described: Sequence[tuple[str, tuple[int, ...], DType]],
                   item_ids: Sequence[int], meta: bytes) -> None:
    names = [name for name, _, _ in described]
    if len(set(names)) != len(names):
        raise ValueError(f"tensor names must be unique within a message, got {names}")
    if len(described) > MAX_TENSORS or len(item_ids) > MAX_ITEMS or len(meta) > MAX_META_BYTES:
        raise ValueError(f"at most {MAX_TENSORS} tensors, {MAX_ITEMS} item ids and "
                         f"{MAX_META_BYTES} metadata bytes per message")
    for name, shape, _ in described:
        if len(name.encode()) > MAX_NAME_BYTES or len(shape) > MAX_NDIM:
            raise ValueError(f"tensor {name!r}: names up to {MAX_NAME_BYTES} bytes and up to "
                             f"{MAX_NDIM} dimensions")


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


class Consumer:
    """The reading end: takes messages from its own data ring in sequence order."""

    def __init__(self, layout: RingLayout, ring: LocalRegion, credits: RemoteRegion,
                 peer: PeerInfo, policy: WaitPolicy = WaitPolicy(),
                 check_alive: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.layout = layout
        self.peer = peer
        self.state = EndState.OPEN
        self.finished = False
        self._ring = ring
        self._view = memoryview(ring.buffer)
        self._credits = credits
        self._policy = policy
        self._check_alive = check_alive
        self._clock = clock
        self._sleep = sleep
        self._expected = 1
        self._released = 0
        self._released_ahead: set[int] = set()
        self._bases = [layout.slot_offset(seq) for seq in range(1, layout.slots + 1)]
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
