"""Slot wire format: typed header encode/decode, tensor dtypes, checksums and slot sizing.

A slot is `stamp (8 bytes) | header | padding to 64 | payload`. The stamp holds the message's
sequence number and is written last; the header carries everything needed to check the slot
before any byte of it is handed to the consumer. All integers are little-endian.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

import numpy as np

MAGIC = 0x4F505247  # "OPRG"
VERSION = 1
STAMP_BYTES = 8
ALIGN = 64
MAX_NDIM = 8
MAX_TENSORS = 64
MAX_NAME_BYTES = 64
MAX_ITEMS = 4096
MAX_META_BYTES = 4096
CHECK_BLOCK = 4096

# magic, version, kind, ntensors, integrity, pad, seq, channel_id, header_len,
# unit_id, payload_len, payload_sum, nitems, meta_len, pad
_FIXED = struct.Struct("<IHBBBxxxQIIQQIHHxxxx")
_TENSOR = struct.Struct("<BBHxxxxQQ")  # dtype, ndim, name_len, offset, nbytes
_DIM = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_STAMP = struct.Struct("<Q")


class DType(IntEnum):
    """Tensor element types a message can carry; bfloat16 travels as raw 2-byte words."""

    FLOAT32 = 1
    FLOAT16 = 2
    BFLOAT16 = 3
    UINT8 = 4
    INT64 = 5

    @property
    def storage(self) -> np.dtype:
        """The numpy dtype that holds this type's bytes (bfloat16 is stored as uint16)."""
        return _STORAGE[self]

    @property
    def itemsize(self) -> int:
        return _STORAGE[self].itemsize

    @classmethod
    def of(cls, array: np.ndarray) -> DType:
        """The DType of a numpy array; bfloat16 cannot be inferred and must be given explicitly."""
        dtype = _INFERRED.get(array.dtype)
        if dtype is None:
            valid = ", ".join(d.name.lower() for d in DType)
            raise TypeError(f"numpy dtype {array.dtype} cannot be sent; valid types: {valid}")
        return dtype


_STORAGE = {
    DType.FLOAT32: np.dtype("<f4"),
    DType.FLOAT16: np.dtype("<f2"),
    DType.BFLOAT16: np.dtype("<u2"),
    DType.UINT8: np.dtype("u1"),
    DType.INT64: np.dtype("<i8"),
}
_INFERRED = {storage: dtype for dtype, storage in _STORAGE.items() if dtype is not DType.BFLOAT16}


class MessageKind(IntEnum):
    """DATA carries tensors; CLOSE is the producer's last message (end of stream)."""

    DATA = 1
    CLOSE = 2


class Integrity(IntEnum):
    """What the consumer checks before handing a slot out.

    FULL checks the header checksum and a checksum of every payload byte (default; catches
    torn and corrupted payloads on any fabric). HEADER checks only the header and relies on the
    fabric publishing the stamp after the payload (allowed only on fabrics that guarantee it).
    """

    FULL = 1
    HEADER = 2


@dataclass(frozen=True)
class TensorSpec:
    """A declared tensor: name, shape and element type."""

    name: str
    shape: tuple[int, ...]
    dtype: DType

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * self.dtype.itemsize


class Header(NamedTuple):
    """The decoded header of one slot (a named tuple: built once per message on the hot path)."""

    seq: int
    channel_id: int
    kind: MessageKind
    integrity: Integrity
    unit_id: int
    item_ids: tuple[int, ...]
    meta: bytes
    tensors: tuple[TensorSpec, ...]
    offsets: tuple[int, ...]
    payload_len: int
    payload_sum: int


class WireError(ValueError):
    """A slot's bytes do not form a valid message; the text says which check failed."""


def align(n: int, to: int = ALIGN) -> int:
    return (n + to - 1) // to * to


def tensor_offsets(specs: Sequence[TensorSpec]) -> tuple[tuple[int, ...], int]:
    """Payload offsets of each tensor (each 64-byte aligned) and the payload length."""
    offsets = []
    end = 0
    for spec in specs:
        start = align(end)
        offsets.append(start)
        end = start + spec.nbytes
    return tuple(offsets), end


def header_bytes(specs: Sequence[TensorSpec], n_items: int, meta_len: int) -> int:
    """Encoded header length (without the stamp) for these tensors and metadata."""
    size = _FIXED.size + 8 * n_items + meta_len
    for spec in specs:
        size += _TENSOR.size + 8 * len(spec.shape) + len(spec.name.encode())
    return align(size + _CRC.size, 4)


def payload_start(header_len: int) -> int:
    """Offset of the payload inside a slot."""
    return align(STAMP_BYTES + header_len)


def slot_bytes_for(
    specs: Sequence[TensorSpec], *, max_items: int = 64, max_meta_bytes: int = 256
) -> int:
    """Smallest slot (a multiple of 64 bytes) that holds one message of these declared tensors."""
    _, payload_len = tensor_offsets(specs)
    return align(payload_start(header_bytes(specs, max_items, max_meta_bytes)) + payload_len)


def payload_checksum(parts: Sequence[np.ndarray]) -> int:
    """32-bit checksum of the tensors' bytes, in order.

    Per 4 KiB block a 64-bit word sum (vectorised, near memory speed), then CRC-32 over the
    block sums and the tail bytes. Any change to a block that alters its word sum is caught, as
    are swapped or stale blocks; a change that keeps a block's sum (two words moved in
    opposite directions by the same amount) is not.
    """
    crc = 0
    for part in parts:
        crc = checksum_update(part, crc)
    return crc


def checksum_update(part: np.ndarray, crc: int) -> int:
    """Fold one part into a running payload checksum; parts split at 4 KiB multiples agree."""
    data = part.reshape(-1).view(np.uint8)
    whole = len(data) // CHECK_BLOCK * CHECK_BLOCK
    if whole:
        sums = np.add.reduce(data[:whole].view("<u8").reshape(-1, CHECK_BLOCK // 8), axis=1)
        crc = zlib.crc32(sums, crc)
    if whole < len(data):
        crc = zlib.crc32(data[whole:], crc)
    return crc


class HeaderEncoder:
    """Encodes the headers of one message layout (kind, tensors, item count, metadata length).

    The tensor table and padding are packed once; each message fills in its own fields and the
    CRC. `encode` returns the encoder's one buffer, which the next call overwrites.
    """

    def __init__(self, kind: MessageKind, integrity: Integrity, channel_id: int,
                 specs: tuple[TensorSpec, ...], offsets: tuple[int, ...], payload_len: int,
                 n_items: int, meta_len: int) -> None:
        table = _encode_table(specs, offsets)
        self.size = header_bytes(specs, n_items, meta_len)
        self._constants = (MAGIC, VERSION, kind, len(specs), integrity)
        self._channel_id = channel_id
        self._payload_len = payload_len
        self._n_items = n_items
        self._meta_len = meta_len
        self._ids = struct.Struct(f"<{n_items}Q")
        self._meta_at = _FIXED.size + self._ids.size
        self._crc_at = self.size - _CRC.size
        self._buffer = bytearray(self.size)
        table_at = self._meta_at + meta_len
        self._buffer[table_at: table_at + len(table)] = table
        self._body = memoryview(self._buffer)[: self._crc_at]

    def encode(self, seq: int, unit_id: int, item_ids: Sequence[int], meta: bytes,
               payload_sum: int) -> bytearray:
        """The header's bytes, ending with a CRC-32 of everything before it."""
        buffer = self._buffer
        _FIXED.pack_into(buffer, 0, *self._constants, seq, self._channel_id, self.size, unit_id,
                         self._payload_len, payload_sum, self._n_items, self._meta_len)
        if self._n_items:
            self._ids.pack_into(buffer, _FIXED.size, *item_ids)
        if self._meta_len:
            buffer[self._meta_at: self._meta_at + self._meta_len] = meta
        _CRC.pack_into(buffer, self._crc_at, zlib.crc32(self._body))
        return buffer


@functools.lru_cache(maxsize=256)
def _encode_table(specs: tuple[TensorSpec, ...], offsets: tuple[int, ...]) -> bytes:
    parts = []
    for spec, offset in zip(specs, offsets):
        name = spec.name.encode()
        parts.append(_TENSOR.pack(spec.dtype, len(spec.shape), len(name), offset, spec.nbytes))
        parts.extend(_DIM.pack(d) for d in spec.shape)
        parts.append(name)
    return b"".join(parts)


def encode_stamp(seq: int) -> bytes:
    return _STAMP.pack(seq)


def read_stamp(buf: memoryview, base: int) -> int:
    return _STAMP.unpack_from(buf, base)[0]


def decode_header(buf: memoryview, base: int, slot_len: int) -> tuple[Header, int]:
    """Validate and decode the header of the slot at `base` of `buf` (a uint8 memoryview).

    Returns the header and the payload's offset inside the slot. The CRC is checked on every
    call; the checks and decoding of the message's layout are cached per distinct layout.
    """
    if slot_len < STAMP_BYTES + _FIXED.size + _CRC.size:
        raise WireError(f"slot of {slot_len} bytes is too small for a header")
    at = base + STAMP_BYTES
    (magic, version, kind, ntensors, integrity, seq, channel_id, header_len, unit_id, payload_len,
     payload_sum, nitems, meta_len) = _FIXED.unpack_from(buf, at)
    if not _FIXED.size + _CRC.size <= header_len <= slot_len - STAMP_BYTES:
        raise WireError(f"header length {header_len} is outside 0..{slot_len - STAMP_BYTES}")
    crc_at = at + header_len - _CRC.size
    if zlib.crc32(buf[at: crc_at]) != _CRC.unpack_from(buf, crc_at)[0]:
        raise WireError("header checksum mismatch")
    ids_at = at + _FIXED.size
    table_at = ids_at + 8 * nitems + meta_len
    layout = _decode_layout(magic, version, kind, integrity, ntensors, nitems, meta_len,
                            header_len, payload_len, slot_len, bytes(buf[table_at: crc_at]))
    item_ids = layout.ids.unpack_from(buf, ids_at) if nitems else ()
    meta = bytes(buf[table_at - meta_len: table_at]) if meta_len else b""
    header = Header(seq, channel_id, layout.kind, layout.integrity, unit_id, item_ids, meta,
                    layout.specs, layout.offsets, payload_len, payload_sum)
    return header, layout.data_start


class _Layout(NamedTuple):
    """What a header's layout fields decode to (everything but the per-message fields)."""

    kind: MessageKind
    integrity: Integrity
    specs: tuple[TensorSpec, ...]
    offsets: tuple[int, ...]
    ids: struct.Struct
    data_start: int


@functools.lru_cache(maxsize=256)
def _decode_layout(magic: int, version: int, kind: int, integrity: int, ntensors: int,
                   nitems: int, meta_len: int, header_len: int, payload_len: int, slot_len: int,
                   table: bytes) -> _Layout:
    if magic != MAGIC or version != VERSION:
        raise WireError(f"bad magic/version {magic:#x}/{version}")
    if kind not in _KINDS or integrity not in _INTEGRITIES:
        raise WireError(f"unknown message kind {kind} or integrity mode {integrity}")
    if ntensors > MAX_TENSORS or nitems > MAX_ITEMS or meta_len > MAX_META_BYTES:
        raise WireError(f"counts out of range: {ntensors} tensors, {nitems} items, "
                        f"{meta_len} meta bytes")
    if _FIXED.size + 8 * nitems + meta_len + _CRC.size > header_len:
        raise WireError("item ids and metadata overrun the header")
    data_start = payload_start(header_len)
    if data_start + payload_len > slot_len:
        raise WireError(f"payload of {payload_len} bytes overruns the {slot_len}-byte slot")
    specs, offsets = _decode_table(table, ntensors, payload_len)
    return _Layout(_KINDS[kind], _INTEGRITIES[integrity], specs, offsets,
                   struct.Struct(f"<{nitems}Q"), data_start)


def _decode_table(raw: bytes, ntensors: int, payload_len: int
                  ) -> tuple[tuple[TensorSpec, ...], tuple[int, ...]]:
    specs, offsets = [], []
    pos = 0
    for _ in range(ntensors):
        spec, offset, pos = _parse_tensor(raw, pos)
        if offset % spec.dtype.itemsize or offset + spec.nbytes > payload_len:
            raise WireError(f"tensor {spec.name!r} at offset {offset} lies outside the payload")
        specs.append(spec)
        offsets.append(offset)
    if any(raw[pos:]):
        raise WireError("non-zero bytes after the tensor table")
    if len({s.name for s in specs}) != len(specs):
        raise WireError("duplicate tensor names")
    return tuple(specs), tuple(offsets)


def _parse_tensor(raw: bytes, pos: int) -> tuple[TensorSpec, int, int]:
    if pos + _TENSOR.size > len(raw):
        raise WireError("tensor table overruns the header")
    dtype, ndim, name_len, offset, nbytes = _TENSOR.unpack_from(raw, pos)
    pos += _TENSOR.size
    if ndim > MAX_NDIM or name_len > MAX_NAME_BYTES or pos + 8 * ndim + name_len > len(raw):
        raise WireError(f"tensor entry out of range (ndim {ndim}, name {name_len} bytes)")
    if dtype not in _DTYPES:
        raise WireError(f"unknown dtype code {dtype}")
    shape = struct.unpack_from(f"<{ndim}Q", raw, pos)
    pos += 8 * ndim
    try:
        name = raw[pos: pos + name_len].decode()
    except UnicodeDecodeError as err:
        raise WireError("tensor name is not UTF-8") from err
    pos += name_len
    spec = TensorSpec(name, tuple(shape), _DTYPES[dtype])
    if spec.nbytes != nbytes:
        raise WireError(f"tensor {name!r}: shape {shape} does not match {nbytes} bytes")
    return spec, offset, pos


_KINDS = {int(k): k for k in MessageKind}
_INTEGRITIES = {int(i): i for i in Integrity}
_DTYPES = {int(d): d for d in DType}


class CreditStatus(IntEnum):
    """The consumer's view of the channel, written back with every credit update."""

    OPEN = 1
    CLOSED = 2
    FAILED = 3


class CreditRecord(NamedTuple):
    """Written by the consumer into the producer's memory: slots released so far, and status."""

    released: int
    status: CreditStatus


_CREDIT = struct.Struct("<QI")
CREDIT_BYTES = _CREDIT.size + _CRC.size


def encode_credit(record: CreditRecord) -> bytes:
    body = _CREDIT.pack(record.released, record.status)
    return body + _CRC.pack(zlib.crc32(body))


def decode_credit(buf: memoryview) -> CreditRecord | None:
    """The record, or None while it is all zeros (nothing released yet) or torn mid-write."""
    data = bytes(buf[:CREDIT_BYTES])
    released, status = _CREDIT.unpack_from(data, 0)
    (crc,) = _CRC.unpack_from(data, _CREDIT.size)
    if crc != zlib.crc32(data[: _CREDIT.size]) or status not in _CREDIT_STATUSES:
        return None
    return CreditRecord(released, _CREDIT_STATUSES[status])


_CREDIT_STATUSES = {int(s): s for s in CreditStatus}
