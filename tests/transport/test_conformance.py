"""One suite every fabric passes: region semantics, then the ring protocol over the fabric."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from transport_helpers import random_tensors

from onepiece_hpc.transport import (
    ChannelClosed,
    MessageTooLarge,
    PeerInfo,
    RingLayout,
    WaitPolicy,
)
from onepiece_hpc.transport.consumer import Consumer
from onepiece_hpc.transport.fabrics.verbs import verbs_devices
from onepiece_hpc.transport.producer import Producer
from onepiece_hpc.transport.region import ArrayRegion
from onepiece_hpc.transport.ring import CREDIT_REGION_BYTES

ME = PeerInfo(0, socket.gethostname(), os.getpid())


class _InProc:
    kind = "inproc"
    ordered_publish = True

    def create_region(self, nbytes: int, peer: PeerInfo) -> ArrayRegion:
        region = ArrayRegion(nbytes)
        region.descriptor = lambda: {"id": id(region)}
        region.seal = region.close = lambda: None
        self._last = region
        return region

    def attach_region(self, descriptor: dict, peer: PeerInfo) -> ArrayRegion:
        return self._last

    def liveness(self, peer: PeerInfo) -> None:
        return None

    def close(self) -> None:
        return None


def _shm():
    from onepiece_hpc.transport.fabrics.shm import ShmFabric
    return ShmFabric()


def _rma():
    from mpi4py import MPI

    from onepiece_hpc.transport.fabrics.mpi_rma import RmaFabric
    return RmaFabric(MPI.COMM_SELF, 8 << 20)


def _verbs():
    if not verbs_devices():
        pytest.skip("no RDMA device")
    from onepiece_hpc.transport.fabrics.verbs import VerbsFabric
    return VerbsFabric()


FABRICS: dict[str, Callable[[], object]] = {"inproc": _InProc, "shm": _shm, "mpi-rma": _rma,
                                            "verbs": _verbs}


@pytest.fixture(params=list(FABRICS))
def fabric(request: pytest.FixtureRequest) -> Iterator[object]:
    made = FABRICS[request.param]()
    yield made
    made.close()


def _channel(fabric, layout: RingLayout, policy: WaitPolicy = WaitPolicy(timeout_s=5)):
    data = fabric.create_region(layout.data_bytes, ME)
    ring = fabric.attach_region(data.descriptor(), ME)
    credits = fabric.create_region(CREDIT_REGION_BYTES, ME)
    credit_writer = fabric.attach_region(credits.descriptor(), ME)
    data.seal()
    credits.seal()
    producer = Producer(layout, credits, ring, ME, policy)
    consumer = Consumer(layout, data, credit_writer, ME, policy)
    return producer, consumer, [ring, credit_writer, data, credits]


def test_writes_land_and_publish_is_visible(fabric) -> None:
    owned = fabric.create_region(4096, ME)
    remote = fabric.attach_region(owned.descriptor(), ME)
    owned.seal()
    remote.write(64, np.arange(100, dtype=np.uint8))
    remote.publish(0, b"\x01\x02\x03\x04\x05\x06\x07\x08")
    owned.sync()
    assert bytes(owned.buffer[:8]) == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    np.testing.assert_array_equal(owned.buffer[64:164], np.arange(100, dtype=np.uint8))
    remote.close()
    owned.close()


def test_random_messages_arrive_in_order_intact(fabric) -> None:
    layout = RingLayout(3, 16384)
    producer, consumer, regions = _channel(fabric, layout)
    rng = random.Random(11)
    expected = []
    for round_ in range(40):
        outs = random_tensors(rng, 12000)
        producer.send(outs, unit_id=round_, item_ids=[round_, round_ + 1])
        expected.append([(t.name, t.array.tobytes()) for t in outs])
        if round_ % 3 == 2:
            for _ in range(3):
                message = consumer.receive(timeout_s=5)
                want = expected.pop(0)
                assert [(n, a.tobytes()) for n, a in message.tensors.items()] == want
                message.release()
    for want in expected:
        with consumer.receive(timeout_s=5) as message:
            assert [(n, a.tobytes()) for n, a in message.tensors.items()] == want
    producer.finish(timeout_s=5)
    assert consumer.receive(timeout_s=5) is None
    assert producer.acknowledged()
    for region in regions:
        region.close()


def test_full_ring_blocks_then_times_out_naming_peer(fabric) -> None:
    layout = RingLayout(2, 1024)
    producer, consumer, regions = _channel(fabric, layout, WaitPolicy(timeout_s=0.2))
    producer.send({"x": np.ones(8, np.uint8)})
    producer.send({"x": np.ones(8, np.uint8)})
    assert producer.try_send({"x": np.ones(8, np.uint8)}) is None
    with pytest.raises(Exception, match=f"rank 0 .*{ME.host}.*within 0.2 s"):
        producer.send({"x": np.ones(8, np.uint8)})
    consumer.receive().release()
    assert producer.send({"x": np.ones(8, np.uint8)}) == 3
    with pytest.raises(MessageTooLarge):
        producer.send({"x": np.ones(4096, np.uint8)})
    consumer.close()
    consumer.close()
    with pytest.raises(ChannelClosed, match="closed the channel"):
        producer.send({"x": np.ones(8, np.uint8)})
    for region in regions:
        region.close()


def test_torch_views_share_the_slot() -> None:
    torch = pytest.importorskip("torch")
    from onepiece_hpc.transport.fabrics.inproc import inproc_channel
    from onepiece_hpc.transport.torch_view import tensors_out, to_torch

    producer, consumer = inproc_channel(RingLayout(2, 4096))
    sent = {"a": torch.randn(3, 5, dtype=torch.bfloat16), "b": torch.arange(6).reshape(2, 3)}
    producer.send(tensors_out(sent))
    message = consumer.receive(timeout_s=1)
    got = to_torch(message)
    assert got["a"].dtype == torch.bfloat16 and torch.equal(got["a"], sent["a"])
    assert torch.equal(got["b"], sent["b"])
    got["b"][0, 0] = 99
    assert message.tensors["b"][0, 0] == 99
    message.release()
