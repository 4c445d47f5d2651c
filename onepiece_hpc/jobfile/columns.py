"""Columns of text and numbers that hold 10^7 rows without a Python object per row.

A job's prompts and items live in these: one UTF-8 buffer with row offsets for text, typed
buffers for numbers. A row becomes Python objects only when something asks for it.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextColumn:
    """Rows of text: row i is data[offsets[i]:offsets[i + 1]] decoded as UTF-8."""

    data: bytes | bytearray
    offsets: np.ndarray  # int64, one more than the rows

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> str:
        return self.data[int(self.offsets[row]):int(self.offsets[row + 1])].decode("utf-8")

    def rows(self, start: int, stop: int) -> list[str]:
        return [self[row] for row in range(start, stop)]


@dataclass(frozen=True)
class ConstantText:
    """The same text in every row (e.g. a job's default negative prompt, which no line overrides)."""

    value: str
    count: int

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, row: int) -> str:
        if not -self.count <= row < self.count:
            raise IndexError(row)
        return self.value

    def rows(self, start: int, stop: int) -> list[str]:
        return [self.value] * (stop - start)


Texts = TextColumn | ConstantText


class TextBuilder:
    """Appends rows of text to one buffer."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._offsets = array("q", [0])

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def append(self, text: str) -> None:
        self._data += text.encode("utf-8")
        self._offsets.append(len(self._data))

    def extend(self, texts: list[str]) -> None:
        """Append many rows at once (one encode and one buffer append for all of them)."""
        joined = "".join(texts)
        self._data += joined.encode("utf-8")
        lengths = list(map(len, texts)) if joined.isascii() else [len(t.encode("utf-8")) for t in texts]
        ends = np.cumsum(lengths, dtype=np.int64) + self._offsets[-1]
        self._offsets.extend(ends.tolist())

    def build(self) -> TextColumn:
        return TextColumn(self._data, np.frombuffer(self._offsets, dtype=np.int64).copy())  # the buffer, not a copy


class NumberBuilder:
    """Appends numbers of one type ('q' int64, 'i' int32, 'd' float64) to a typed buffer."""

    def __init__(self, code: str) -> None:
        self._values = array(code)

    def __len__(self) -> int:
        return len(self._values)

    def append(self, value) -> None:
        self._values.append(value)

    def extend(self, values: list) -> None:
        self._values.extend(values)

    def build(self) -> np.ndarray:
        return np.frombuffer(self._values, dtype=np.dtype(self._values.typecode)).copy()
