"""The writing end of a channel: sends messages into the consumer's data ring as credits allow."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from onepiece_hpc.transport.errors import (
    ChannelClosed,
    CorruptMessage,
    MessageTooLarge,
    PeerInfo,
    PeerTimeout,
)
from onepiece_hpc.transport.region import LocalRegion, RemoteRegion
from onepiece_hpc.transport.ring import DeviceBytes, EndState, RingLayout, TensorOut, _RingEnd
from onepiece_hpc.transport.wait import WaitPolicy, poll_until
from onepiece_hpc.transport.wire import (
    MAX_ITEMS,
    MAX_META_BYTES,
    MAX_NAME_BYTES,
    MAX_NDIM,
    MAX_TENSORS,
    STAMP_BYTES,
    CreditRecord,
    CreditStatus,
    DType,
    HeaderEncoder,
    Integrity,
    MessageKind,
    TensorSpec,
    checksum_update,
    decode_credit,
    encode_stamp,
    payload_start,
    tensor_offsets,
)

log = logging.getLogger(__name__)

WRITE_CHUNK = 256 * 1024  # copy and checksum in cache-sized pieces (a multiple of 4 KiB)


class _Plan(NamedTuple):
    """How one message layout is written: each tensor's offset in the slot, and its header."""

    offsets: tuple[int, ...]
    header: HeaderEncoder


class Producer(_RingEnd):
    """The writing end: sends messages into the consumer's data ring as credits allow."""

    def __init__(self, layout: RingLayout, credits: LocalRegion, ring: RemoteRegion,
                 peer: PeerInfo, policy: WaitPolicy = WaitPolicy(),
                 check_alive: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(layout, peer, policy, check_alive, clock, sleep)
        self._credits = credits
        self._credit_view = memoryview(credits.buffer)
        self._ring = ring
        self._next_seq = 1
        self._full = layout.integrity is Integrity.FULL
        self._plans: dict[tuple, _Plan] = {}
        self._close_plan = self._plan(MessageKind.CLOSE, (), 0, 0)

    @property
    def device_only(self) -> bool:
        """Whether every payload must be `DeviceBytes` (the consumer reads payloads from its GPU,
        as over cuda-ipc): a host array would land where the consumer never looks."""
        return bool(getattr(self._ring, "device_payloads", False))

    @property
    def accepts_device(self) -> bool:
        """Whether messages may carry `DeviceBytes` (the fabric copies device to device or into
        pinned memory, and the channel checks headers only)."""
        return bool(getattr(self._ring, "accepts_device", False)) and not self._full

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
            device_only = self.device_only
            for out in tensors:
                if type(out.array) is DeviceBytes and not self.accepts_device:
                    raise ValueError(f"tensor {out.name!r} is in device memory, but the channel to "
                                     f"consumer {self.peer.describe()} carries host memory only; "
                                     "copy it to the host first")
                if device_only and type(out.array) is not DeviceBytes:
                    raise ValueError(f"tensor {out.name!r} is in host memory, but the channel to consumer "
                                     f"{self.peer.describe()} carries device memory only (its payloads are "
                                     "read from the consumer's GPU); move it to the GPU first")
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
            if type(array) is DeviceBytes:
                ring.write(base + offset, array)  # one copy by the fabric; no checksum (HEADER)
                continue
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


