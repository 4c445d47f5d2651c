"""The double-ring channel as pure logic: one producer, one consumer, K slots of S bytes.

Data ring in the consumer's memory, credit record in the producer's memory. The producer
writes payload, then header, then publishes the slot's sequence stamp; the consumer polls its
own memory for the stamp it expects, validates the slot, hands out zero-copy views and, on
release, writes back how many slots it has released. Sequence numbers start at 1 and only
grow, so a slot left from an earlier lap (stamp = seq - K) is never taken for a fresh one.
At most K messages are in flight, and every wait has a deadline.

This module holds what both ends share (the layout, the tensor wrapper, the end states);
`producer.py` and `consumer.py` hold the two ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from onepiece_hpc.transport.errors import (
    PeerInfo,
)
from onepiece_hpc.transport.wait import WaitPolicy
from onepiece_hpc.transport.wire import (
    ALIGN, DType, Integrity,
)

log = logging.getLogger(__name__)



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
class DeviceBytes:
    """A tensor's bytes in accelerator memory, opaque to the protocol: `data` is what the
    fabric's regions copy from or hand out (it supports `.clone()`), `shape` the tensor's shape.
    Only fabrics whose regions say `accepts_device` carry them, and never with payload checksums
    (the CPU can't read them)."""

    data: object
    shape: tuple[int, ...]
    nbytes: int

    def view(self) -> DeviceBytes:
        return self

    def copy(self) -> DeviceBytes:
        return DeviceBytes(self.data.clone(), self.shape, self.nbytes)


@dataclass(frozen=True)
class TensorOut:
    """A tensor to send: numpy array plus its element type (bfloat16 as uint16 storage), or the
    bytes of a tensor in accelerator memory (`DeviceBytes`)."""

    name: str
    array: np.ndarray | DeviceBytes
    dtype: DType

    @classmethod
    def of(cls, name: str, array: np.ndarray, dtype: DType | None = None) -> TensorOut:
        chosen = DType.of(array) if dtype is None else dtype
        if array.dtype.itemsize != chosen.itemsize:
            raise TypeError(f"tensor {name!r}: array of {array.dtype} cannot carry {chosen.name}")
        return cls(name, np.ascontiguousarray(array), chosen)


class EndState(Enum):
    """Life of one end of a channel: OPEN -> CLOSED (orderly) or FAILED (error seen)."""

    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"


class _RingEnd:
    """What both ends of a channel hold: the agreed layout, the peer, how to wait, slot offsets."""

    def __init__(self, layout: RingLayout, peer: PeerInfo, policy: WaitPolicy,
                 check_alive: Callable[[], None] | None, clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self.layout = layout
        self.peer = peer
        self.state = EndState.OPEN
        self._policy = policy
        self._check_alive = check_alive
        self._clock = clock
        self._sleep = sleep
        self._released = 0
        self._bases = [layout.slot_offset(seq) for seq in range(1, layout.slots + 1)]


