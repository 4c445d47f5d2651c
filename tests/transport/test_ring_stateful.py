"""Hypothesis explores arbitrary interleavings of producer, consumer and fabric delivery.

The fabric model lands writes in any order and may tear them (part of a write visible), and
may even show the stamp before the payload; writes of one message complete before the next
message is written (all real fabrics give that: shm stores are synchronous, mpi-rma flushes,
verbs waits for completions). Properties: every message arrives once, in order, intact;
nothing torn is ever handed out; credits never go negative; never more than K in flight.
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from transport_helpers import DelayedRegion, FakeClock, random_tensors

from onepiece_hpc.transport.consumer import Consumer
from onepiece_hpc.transport.errors import PeerInfo
from onepiece_hpc.transport.producer import Producer
from onepiece_hpc.transport.region import ArrayRegion
from onepiece_hpc.transport.ring import CREDIT_REGION_BYTES, RingLayout
from onepiece_hpc.transport.wait import WaitPolicy
from onepiece_hpc.transport.wire import Integrity

PEER = PeerInfo(rank=1, host="test", pid=1)


class RingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.layout = RingLayout(slots=3, slot_bytes=2048, channel_id=9, integrity=Integrity.FULL)
        self.data = ArrayRegion(self.layout.data_bytes)
        self.credits = ArrayRegion(CREDIT_REGION_BYTES)
        self.to_consumer = DelayedRegion(self.data.buffer)
        self.to_producer = DelayedRegion(self.credits.buffer)
        policy = WaitPolicy(timeout_s=1.0, settle_s=3600.0)
        self.producer = Producer(self.layout, self.credits, self.to_consumer, PEER, policy,
                                 clock=self.clock, sleep=self.clock.sleep)
        self.consumer = Consumer(self.layout, self.data, self.to_producer, PEER, policy,
                                 clock=self.clock, sleep=self.clock.sleep)
        self.sent: list[tuple[int, list[tuple[str, bytes, tuple[int, ...]]]]] = []
        self.received = 0
        self.held = []

    @rule(seed=st.integers(0, 2**32 - 1))
    def send(self, seed: int) -> None:
        self.to_consumer.deliver_all()
        rng = random.Random(seed)
        outs = random_tensors(rng, 1200)
        unit = rng.getrandbits(63)
        seq = self.producer.try_send(outs, unit_id=unit, item_ids=[unit % 7, unit % 11])
        if seq is None:
            assert self.producer.in_flight == self.layout.slots
            return
        expected = [(t.name, t.array.tobytes(), t.array.shape) for t in outs]
        self.sent.append((unit, expected))
        assert seq == len(self.sent)

    @precondition(lambda self: self.consumer.held < self.layout.slots)
    @rule()
    def receive(self) -> None:
        message = self.consumer.try_receive()
        if message is None:
            return
        unit, expected = self.sent[self.received]
        self.received += 1
        assert message.seq == self.received
        assert message.unit_id == unit
        got = [(name, array.tobytes(), array.shape) for name, array in message.tensors.items()]
        assert got == expected
        self.held.append(message)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 10))
    def release(self, index: int) -> None:
        self.held.pop(index % len(self.held)).release()

    @precondition(lambda self: self.to_consumer.pending)
    @rule(index=st.integers(0, 50), cut=st.integers(0, 5000), whole=st.booleans())
    def deliver_data(self, index: int, cut: int, whole: bool) -> None:
        if whole:
            self.to_consumer.deliver(index)
        else:
            self.to_consumer.deliver_part(index, cut)

    @precondition(lambda self: self.to_producer.pending)
    @rule(index=st.integers(0, 50))
    def deliver_credit(self, index: int) -> None:
        self.to_producer.deliver(index)

    @invariant()
    def bounded(self) -> None:
        assert 0 <= self.producer.in_flight <= self.layout.slots
        assert self.received <= len(self.sent)
        assert len(self.sent) - self.received <= self.layout.slots
        assert 0 <= self.consumer.held <= self.layout.slots


RingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestRingInterleavings = RingMachine.TestCase


def test_everything_arrives_once_after_full_delivery() -> None:
    """Drive the machine to completion: all sent messages are eventually received in order."""
    machine = RingMachine()
    rng = random.Random(3)
    for step in range(400):
        action = rng.random()
        if action < 0.4:
            machine.send(rng.getrandbits(32))
        elif action < 0.7 and machine.consumer.held < machine.layout.slots:
            machine.receive()
        elif machine.held:
            machine.release(rng.randint(0, 9))
        if machine.to_producer.pending:
            machine.to_producer.deliver_all()
    machine.to_consumer.deliver_all()
    while machine.received < len(machine.sent):
        for message in machine.held:
            message.release()
        machine.held.clear()
        machine.to_producer.deliver_all()
        machine.receive()
    assert machine.received == len(machine.sent) > 50
    assert np.all(machine.producer.in_flight >= 0)
