"""Slot format: round trips, sizing, and fuzzed corruption that must never be consumed."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transport_helpers import FakeClock, random_tensors

from onepiece_hpc.transport import (
    CorruptMessage,
    DType,
    MessageTooLarge,
    PeerInfo,
    PeerTimeout,
    RingLayout,
    TensorOut,
    TensorSpec,
    WaitPolicy,
    slot_bytes_for,
)
from onepiece_hpc.transport.balance import pick_consumer
from onepiece_hpc.transport.consumer import Consumer
from onepiece_hpc.transport.fabrics.inproc import inproc_channel
from onepiece_hpc.transport.producer import Producer
from onepiece_hpc.transport.region import ArrayRegion
from onepiece_hpc.transport.ring import CREDIT_REGION_BYTES
from onepiece_hpc.transport.wire import CreditStatus, decode_credit, decode_header


def test_all_dtypes_round_trip_zero_copy() -> None:
    specs = [TensorSpec("f32", (2, 3), DType.FLOAT32), TensorSpec("f16", (4,), DType.FLOAT16),
             TensorSpec("bf16", (2, 2, 2), DType.BFLOAT16), TensorSpec("u8", (5,), DType.UINT8),
             TensorSpec("i64", (3, 1), DType.INT64)]
    producer, consumer = inproc_channel(RingLayout(2, slot_bytes_for(specs)))
    arrays = {s.name: np.arange(np.prod(s.shape)).astype(s.dtype.storage).reshape(s.shape)
              for s in specs}
    producer.send([TensorOut.of(s.name, arrays[s.name], s.dtype) for s in specs], unit_id=42,
                  item_ids=[7, 8], meta=b'{"k": 1}')
    message = consumer.receive(timeout_s=1)
    assert (message.unit_id, message.item_ids, message.meta) == (42, (7, 8), b'{"k": 1}')
    assert [s.dtype for s in message.specs] == [s.dtype for s in specs]
    for name, array in arrays.items():
        np.testing.assert_array_equal(message.tensors[name], array)
        assert message.tensors[name].base is not None  # a view on the slot, not a copy
    message.release()


def test_slot_sizing_from_declared_outputs_fits_exactly() -> None:
    specs = [TensorSpec("latents", (4, 16, 60, 104), DType.BFLOAT16)]
    slot = slot_bytes_for(specs, max_items=4, max_meta_bytes=0)
    producer, _ = inproc_channel(RingLayout(2, slot))
    producer.send({"x": np.zeros(0, np.uint8)})
    producer.send([TensorOut("latents", np.zeros(specs[0].shape, np.uint16), DType.BFLOAT16)],
                  item_ids=[1, 2, 3, 4])


def test_larger_than_slot_is_refused_naming_both_sizes() -> None:
    producer, _ = inproc_channel(RingLayout(2, 4096))
    with pytest.raises(MessageTooLarge, match=r"message of \d+ bytes .*4096-byte slot"):
        producer.send({"x": np.zeros(8192, np.uint8)})


def test_pick_consumer_is_join_the_shortest_queue() -> None:
    assert pick_consumer([1, 3, 2]) == 1
    assert pick_consumer([0, 0]) is None
    assert pick_consumer([2, 2, 2], start=2) == 2


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.lists(st.tuples(st.integers(0, 10**6),
                                                               st.integers(1, 255)),
                                                     min_size=1, max_size=4))
def test_fuzzed_slot_corruption_is_rejected_never_consumed(seed: int, flips: list) -> None:
    """Flip bits in the stamp, header or tensor bytes: the consumer raises, never returns it.

    (Alignment padding carries nothing, so flips there are not corruption.)
    """
    clock = FakeClock()
    layout = RingLayout(2, 4096, channel_id=5)
    data, credits = ArrayRegion(layout.data_bytes), ArrayRegion(CREDIT_REGION_BYTES)
    peer = PeerInfo(3, "nodeA", 99)
    policy = WaitPolicy(timeout_s=5, settle_s=0.5)
    producer = Producer(layout, credits, data, peer, policy, clock=clock, sleep=clock.sleep)
    consumer = Consumer(layout, data, credits, peer, policy, clock=clock, sleep=clock.sleep)
    outs = random_tensors(random.Random(seed), 3000)
    producer.send(outs, unit_id=seed, item_ids=[1])
    header, payload_at = decode_header(memoryview(data.buffer), 0, layout.slot_bytes)
    meaningful = [i for i in range(8 + _header_len(data.buffer))]
    for spec, offset in zip(header.tensors, header.offsets):
        meaningful.extend(range(payload_at + offset, payload_at + offset + spec.nbytes))
    before = data.buffer.copy()
    for position, xor in flips:
        data.buffer[meaningful[position % len(meaningful)]] ^= xor
    if np.array_equal(before, data.buffer):
        return  # the flips cancelled out
    # A stamp flipped back to "empty" looks like a message not yet sent: that one times out.
    with pytest.raises((CorruptMessage, PeerTimeout), match="rank 3 .*nodeA") as raised:
        consumer.receive(timeout_s=5)
    if raised.type is CorruptMessage:
        assert "not consumed" in str(raised.value)
        assert decode_credit(memoryview(credits.buffer)).status is CreditStatus.FAILED
    else:
        assert int(data.buffer[:8].view("<u8")[0]) == 0


def _header_len(buffer: np.ndarray) -> int:
    """The encoded header length, read from its fixed part (stamp 8 + 16 bytes in)."""
    return int(buffer[8 + 24: 8 + 28].view("<u4")[0])


def test_corrupt_credit_record_cannot_create_credits() -> None:
    layout = RingLayout(2, 1024)
    producer, consumer = inproc_channel(layout)
    producer.send({"x": np.ones(4, np.uint8)})
    consumer.receive(timeout_s=1).release()
    assert producer.free_slots() == 2
    credits = producer._credits.buffer  # the producer's own memory, as the fabric sees it
    credits[0] ^= 0x40
    assert producer.free_slots() == 2
    assert producer.in_flight == 0


def test_cached_layouts_keep_every_message_its_own_fields_and_views() -> None:
    """Header templates and slot views are reused per layout; no message sees another's values."""
    layout = RingLayout(2, slot_bytes_for([TensorSpec("a", (64,), DType.FLOAT32)]))
    producer, consumer = inproc_channel(layout)
    shapes = [(8, 8), (8, 8), (64,), (8, 8), (2, 4), (8, 8)]  # same slot, changing layouts
    for index, shape in enumerate(shapes):
        array = np.full(shape, index, np.float32)
        producer.send({"a": array}, unit_id=index, item_ids=[index, index + 1],
                      meta=bytes([65 + index]))
        with consumer.receive(timeout_s=1) as message:
            assert (message.unit_id, message.item_ids, message.meta) == \
                (index, (index, index + 1), bytes([65 + index]))
            np.testing.assert_array_equal(message.tensors["a"], array)
            assert message.tensors["a"].flags.writeable
            message.tensors["a"].flags.writeable = False  # must not leak into later messages


def test_a_host_array_is_refused_on_a_channel_whose_payloads_live_in_gpu_memory() -> None:
    """Over cuda-ipc the consumer reads every payload from its GPU; a host array written there
    would land in the host ring, unseen, and the consumer would read stale device bytes. No GPU
    exists here: the inproc ring stands in, flagged as the cuda-ipc region flags itself."""
    from onepiece_hpc.transport import TensorOut

    producer, _ = inproc_channel(RingLayout(2, 4096))
    producer._ring.device_payloads = True
    assert producer.device_only
    with pytest.raises(ValueError, match="'seeds' is in host memory.*carries device memory only"):
        producer.try_send([TensorOut.of("seeds", np.arange(3, dtype=np.int64), DType.INT64)])
