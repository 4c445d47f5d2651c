"""First-fit allocator of 64-byte-aligned extents inside one fixed arena (pure logic)."""

from __future__ import annotations

from onepiece_hpc.transport.wire import ALIGN, align


class ArenaFull(Exception):
    """No free extent is large enough."""


class Arena:
    """Hands out extents of a fixed-size arena; freed extents merge with their neighbours."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._free: list[tuple[int, int]] = [(0, nbytes // ALIGN * ALIGN)]  # (offset, length)
        self._used: dict[int, int] = {}

    def allocate(self, nbytes: int) -> int:
        """Offset of a new extent of at least `nbytes`; raises ArenaFull."""
        want = align(max(nbytes, 1))
        for index, (offset, length) in enumerate(self._free):
            if length >= want:
                if length == want:
                    del self._free[index]
                else:
                    self._free[index] = (offset + want, length - want)
                self._used[offset] = want
                return offset
        largest = max((length for _, length in self._free), default=0)
        raise ArenaFull(f"no free extent of {want} bytes (largest free {largest} of {self.nbytes})")

    def free(self, offset: int) -> None:
        length = self._used.pop(offset)
        self._free.append((offset, length))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for start, size in self._free:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((start, size))
        self._free = merged

    @property
    def in_use(self) -> int:
        return sum(self._used.values())
