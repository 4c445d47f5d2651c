"""Transport: one-sided double-ring channels between stage ranks.

Layers, bottom up: `wire` (slot format, checksums, slot sizing), `ring`, `producer` and
`consumer` (the protocol as pure logic over the `region` interface), `wait` (deadlines and
backoff), `fabrics` (shm, mpi-rma, verbs, in-process), `connect` (set-up over MPI point-to-point),
`balance` (choosing a consumer).
Only `connect` and the MPI/verbs fabrics import MPI or pyverbs.
"""

from onepiece_hpc.transport.consumer import Consumer, ReceivedMessage
from onepiece_hpc.transport.errors import (
    ChannelClosed,
    CorruptMessage,
    MessageTooLarge,
    PeerDied,
    PeerInfo,
    PeerTimeout,
    ProtocolMisuse,
    SetupError,
    TransportError,
)
from onepiece_hpc.transport.producer import Producer
from onepiece_hpc.transport.ring import EndState, RingLayout, TensorOut
from onepiece_hpc.transport.wait import WaitPolicy
from onepiece_hpc.transport.wire import DType, Integrity, TensorSpec, slot_bytes_for

__all__ = [
    "ChannelClosed", "Consumer", "CorruptMessage", "DType", "EndState", "Integrity",
    "MessageTooLarge", "PeerDied", "PeerInfo", "PeerTimeout", "Producer", "ProtocolMisuse",
    "ReceivedMessage", "RingLayout", "SetupError", "TensorOut", "TensorSpec", "TransportError",
    "WaitPolicy", "slot_bytes_for",
]
