"""Raw BSON without decoding: split batches, find `_id`, digest documents.

Comparing raw bytes is exact (field order and numeric types count, as in MongoDB's own
document equality) and far cheaper than decoding.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

import bson

_INT32 = struct.Struct("<i")
_FIXED = {
    0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8,
    0x13: 16, 0xFF: 0, 0x7F: 0,
}  # fmt: skip
_LENGTH_PREFIXED = {0x02: 4, 0x0D: 4, 0x0E: 4}  # string-like: int32 length + bytes
_NUMERIC = {0x01, 0x10, 0x12}


def split_documents(batch: bytes) -> Iterator[bytes]:
    """The documents of a concatenated BSON batch (as `find_raw_batches` returns)."""
    offset, end = 0, len(batch)
    unpack = _INT32.unpack_from
    while offset < end:
        (size,) = unpack(batch, offset)
        yield batch[offset : offset + size]
        offset += size


def digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=16).digest()


def _int32(raw: bytes, offset: int) -> int:
    (value,) = _INT32.unpack_from(raw, offset)
    return int(value)


def _value_end(raw: bytes, etype: int, start: int) -> int:
    if etype in _FIXED:
        return start + _FIXED[etype]
    if etype in _LENGTH_PREFIXED:
        return start + 4 + _int32(raw, start)
    if etype in (0x03, 0x04, 0x0F):
        return start + _int32(raw, start)
    if etype == 0x05:
        return start + 5 + _int32(raw, start)
    if etype == 0x0B:
        first = raw.index(b"\x00", start) + 1
        return raw.index(b"\x00", first) + 1
    if etype == 0x0C:
        return start + 4 + _int32(raw, start) + 12
    raise ValueError(f"unknown BSON element type 0x{etype:02x}")


value_end = _value_end  # for a reader walking a document's elements itself


def elements(
    raw: bytes, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, bytes, int, int, int]]:
    """(type, name, element start, value start, value end) of each element of a document:
    `raw`, or the one embedded in raw[start:stop] (offsets are into `raw` either way)."""
    offset, end = start + 4, (len(raw) if stop is None else stop) - 1
    while offset < end:
        etype = raw[offset]
        name_end = raw.index(b"\x00", offset + 1)
        value_end = _value_end(raw, etype, name_end + 1)
        yield etype, raw[offset + 1 : name_end], offset, name_end + 1, value_end
        offset = value_end


def document(parts: list[bytes]) -> bytes:
    """A raw BSON document from its raw elements."""
    body = b"".join(parts)
    return _INT32.pack(len(body) + 5) + body + b"\x00"


def raw_id(raw: bytes) -> bytes:
    """The `_id` element as type byte + value bytes (usually the first element)."""
    if raw[5:9] == b"_id\x00":  # first, as servers store it: no walk over the elements
        return raw[4:5] + raw[9 : _value_end(raw, raw[4], 9)]
    offset, end = 4, len(raw) - 1
    while offset < end:
        etype = raw[offset]
        name_end = raw.index(b"\x00", offset + 1)
        value_start = name_end + 1
        value_end = _value_end(raw, etype, value_start)
        if raw[offset + 1 : name_end] == b"_id":
            return bytes([etype]) + raw[value_start:value_end]
        offset = value_end
    raise ValueError("document has no _id")


def id_key(rid: bytes) -> bytes:
    """Identity of an `_id` as MongoDB compares it: 1, 1L and 1.0 are the same _id."""
    if rid[0] in _NUMERIC:
        value = id_value(rid)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            value = int(value)
        if isinstance(value, int):
            return b"\x12" + struct.pack("<q", value)
    return rid


def id_document(rid: bytes) -> bytes:
    """A raw BSON document `{_id: value}` from a raw `_id` element."""
    element = rid[:1] + b"_id\x00" + rid[1:]
    return _INT32.pack(len(element) + 5) + element + b"\x00"


def id_value(rid: bytes) -> object:
    """The Python value of a raw `_id` (for query filters)."""
    return bson.decode(id_document(rid))["_id"]
