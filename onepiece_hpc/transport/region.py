"""The one-sided region interface every fabric implements, and the in-process fabric.

A channel needs exactly two capabilities: write bytes at an offset of a peer's region (with
one "publish" write ordered after all earlier ones), and read one's own region. Nothing else
crosses between ranks on the data path: no remote reads, no locks, no remote atomics.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class LocalRegion(Protocol):
    """Memory this rank owns and its peer writes into."""

    @property
    def buffer(self) -> np.ndarray:
        """A uint8 view of the whole region."""
        ...

    def sync(self) -> None:
        """Make writes the peer has completed visible to this rank's loads (and drive progress)."""
        ...


class RemoteRegion(Protocol):
    """A peer's memory this rank writes into."""

    def write(self, offset: int, data: np.ndarray | bytes) -> None:
        """Start writing contiguous bytes (uint8 array or bytes-like) at `offset`.

        It may complete later: the caller leaves `data` unchanged until its next `publish`
        returns.
        """
        ...

    def publish(self, offset: int, data: bytes) -> None:
        """Write `data` so that it becomes visible only after every earlier write has."""
        ...


class ArrayRegion:
    """A region backed by a numpy array of this process: the in-process fabric's both sides."""

    def __init__(self, nbytes: int) -> None:
        self._buffer = np.zeros(nbytes, dtype=np.uint8)
        self._view = memoryview(self._buffer)

    @property
    def buffer(self) -> np.ndarray:
        return self._buffer

    def sync(self) -> None:
        return None

    def write(self, offset: int, data: np.ndarray | bytes) -> None:
        self._view[offset: offset + len(data)] = data

    def publish(self, offset: int, data: bytes) -> None:
        self._view[offset: offset + len(data)] = data
