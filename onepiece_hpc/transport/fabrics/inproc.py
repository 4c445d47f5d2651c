"""In-process fabric: both ends of a channel in one process, for fast tests and examples."""

from __future__ import annotations

import os
import socket

from onepiece_hpc.transport.consumer import Consumer
from onepiece_hpc.transport.errors import PeerInfo
from onepiece_hpc.transport.producer import Producer
from onepiece_hpc.transport.region import ArrayRegion
from onepiece_hpc.transport.ring import CREDIT_REGION_BYTES, RingLayout
from onepiece_hpc.transport.wait import WaitPolicy


def inproc_channel(layout: RingLayout, policy: WaitPolicy = WaitPolicy()) -> tuple[Producer, Consumer]:
    """A connected producer/consumer pair over numpy arrays of this process."""
    me = PeerInfo(rank=0, host=socket.gethostname(), pid=os.getpid())
    data = ArrayRegion(layout.data_bytes)
    credits = ArrayRegion(CREDIT_REGION_BYTES)
    producer = Producer(layout, credits, data, peer=me, policy=policy)
    consumer = Consumer(layout, data, credits, peer=me, policy=policy)
    return producer, consumer
