"""Shared test helpers: deterministic random messages and a fabric that reorders writes."""

from __future__ import annotations

import random

import numpy as np

from onepiece_hpc.transport.ring import TensorOut
from onepiece_hpc.transport.wire import DType

DTYPES = list(DType)


def random_tensors(rng: random.Random, max_bytes: int, max_tensors: int = 3) -> list[TensorOut]:
    """A few tensors of random dtypes and shapes, at most `max_bytes` in all (roughly)."""
    outs = []
    for index in range(rng.randint(0, max_tensors)):
        dtype = rng.choice(DTYPES)
        count = rng.randint(0, max(0, max_bytes // (dtype.itemsize * max_tensors)))
        dims = rng.randint(1, 3)
        shape = [count] + [1] * (dims - 1)
        rng.shuffle(shape)
        seed = rng.getrandbits(32)
        data = np.random.default_rng(seed).integers(0, 256, count * dtype.itemsize, dtype=np.uint8)
        outs.append(TensorOut(f"t{index}", data.view(dtype.storage).reshape(shape), dtype))
    return outs


class DelayedRegion:
    """A remote region whose writes land only when the test delivers them, in any order.

    Models a fabric without ordering: even the publish may land before the payload.
    """

    def __init__(self, target: np.ndarray) -> None:
        self.target = target
        self.pending: list[tuple[int, bytes]] = []

    def write(self, offset: int, data: np.ndarray | bytes) -> None:
        self.pending.append((offset, bytes(data)))

    def publish(self, offset: int, data: bytes) -> None:
        self.pending.append((offset, bytes(data)))

    def deliver(self, index: int) -> None:
        offset, data = self.pending.pop(index % len(self.pending))
        self.target[offset: offset + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def deliver_part(self, index: int, cut: int) -> None:
        """Land only the first `cut` bytes of one pending write (a torn write in progress)."""
        index %= len(self.pending)
        offset, data = self.pending[index]
        cut %= max(len(data), 1)
        self.target[offset: offset + cut] = np.frombuffer(data[:cut], dtype=np.uint8)
        self.pending[index] = (offset + cut, data[cut:])

    def deliver_all(self) -> None:
        while self.pending:
            self.deliver(0)


class FakeClock:
    """A test clock: each reading advances it 1 us, sleeping advances it by the sleep."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1e-6)
