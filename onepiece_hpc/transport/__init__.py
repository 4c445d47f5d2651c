"""Transport: one-sided double-ring channels between stage ranks.

Layers, bottom up: `wire` (slot format, checksums, slot sizing), `ring`, `producer` and
`consumer` (the protocol as pure logic over the `region` interface), `wait` (deadlines and
backoff), `fabrics` (shm, mpi-rma, verbs, cuda-ipc, in-process), `connect` (set-up over MPI
point-to-point), `balance` (choosing a consumer).
Only `connect` and the MPI/verbs fabrics import MPI or pyverbs; importing this package imports
none of its modules until one of the names below is used.
"""

from onepiece_hpc._exports import lazy_exports

__all__ = [
    "ChannelClosed", "Channels", "Consumer", "CorruptMessage", "DType", "DeviceBytes", "EndState", "FabricChoice",
    "Integrity", "IntegrityChoice", "MessageTooLarge", "Outbound", "PeerDied", "PeerInfo", "PeerTimeout",
    "Producer", "ProtocolMisuse", "ReceivedMessage", "RingLayout", "SetupError", "TensorOut", "TensorSpec",
    "TransportError", "WaitPolicy", "open_channels", "pick_consumer", "slot_bytes_for",
]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "balance": ["pick_consumer"],
    "connect": ["Channels", "FabricChoice", "IntegrityChoice", "Outbound", "open_channels"],
    "consumer": ["Consumer", "ReceivedMessage"],
    "errors": ["ChannelClosed", "CorruptMessage", "MessageTooLarge", "PeerDied", "PeerInfo", "PeerTimeout",
               "ProtocolMisuse", "SetupError", "TransportError"],
    "producer": ["Producer"],
    "ring": ["DeviceBytes", "EndState", "RingLayout", "TensorOut"],
    "wait": ["WaitPolicy"],
    "wire": ["DType", "Integrity", "TensorSpec", "slot_bytes_for"],
})
