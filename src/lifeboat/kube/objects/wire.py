"""A minimal, bounds-checked reader of the protobuf wire format for Kubernetes' stored objects.

Walks the fields of one message, giving varints and fixed-width numbers as ints and
length-delimited fields as bytes (the varint itself is :mod:`lifeboat.etcdapi.wire`'s).
Every malformed or truncated buffer raises :class:`SnapshotFormatError`; nothing here
can raise IndexError.
"""

from __future__ import annotations

from lifeboat.errors import SnapshotFormatError
from lifeboat.etcdapi.wire import FIXED32, FIXED64, LENGTH_DELIMITED, VARINT, MalformedValue, to_int64
from lifeboat.etcdapi.wire import read_varint as _read_varint



def malformed(what: str) -> SnapshotFormatError:
    """The error for a stored Kubernetes object whose bytes cannot be decoded."""
    return SnapshotFormatError(
        f"stored Kubernetes object is malformed ({what}); the value is corrupt or truncated"
    )


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Read one base-128 varint at ``pos``; return (value, position after it)."""
    try:
        return _read_varint(buf, pos)
    except MalformedValue as exc:
        raise malformed(str(exc)) from None


def fields(buf: bytes, limit: int = -1) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one message, in order; at most ``limit`` if given.

    Varint and fixed-width values are unsigned ints; length-delimited values are bytes.
    Groups (wire types 3 and 4) are rejected: no Kubernetes type uses them.
    """
    # One flat loop building a list: this runs for every field of every object listed.
    result: list[tuple[int, int | bytes]] = []
    pos = 0
    end = len(buf)
    while pos < end and limit != 0:
        limit -= 1
        # Tags and lengths below 128 are one byte: the common case, read inline.
        tag = buf[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read_varint(buf, pos)
        field = tag >> 3
        wire_type = tag & 0x7
        if field == 0:
            raise malformed(f"field number 0 at byte {pos}")
        if wire_type == LENGTH_DELIMITED:
            if pos < end and buf[pos] < 0x80:
                length = buf[pos]
                pos += 1
            else:
                length, pos = read_varint(buf, pos)
            if length > end - pos:
                raise malformed(f"field {field} needs {length} bytes, {end - pos} left")
            result.append((field, buf[pos : pos + length]))
            pos += length
        elif wire_type == VARINT:
            value, pos = read_varint(buf, pos)
            result.append((field, value))
        elif wire_type in (FIXED64, FIXED32):
            size = 8 if wire_type == FIXED64 else 4
            if end - pos < size:
                raise malformed(f"fixed-width field {field} truncated")
            result.append((field, int.from_bytes(buf[pos : pos + size], "little")))
            pos += size
        else:
            raise malformed(f"unsupported wire type {wire_type} for field {field}")
    return result


def as_bytes(field: int, value: int | bytes) -> bytes:
    """The value of a length-delimited field; any other wire type is malformed."""
    if isinstance(value, bytes):
        return value
    raise malformed(f"field {field} should be length-delimited")


def as_string(field: int, value: int | bytes) -> str:
    """A length-delimited field holding UTF-8 text."""
    raw = as_bytes(field, value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(f"field {field} is not valid UTF-8") from None


def as_int64(field: int, value: int | bytes) -> int:
    """A varint field of protobuf type int64 (two's complement, so negatives wrap)."""
    if isinstance(value, bytes):
        raise malformed(f"field {field} should be a varint")
    return to_int64(value)


def as_bool(field: int, value: int | bytes) -> bool:
    """A varint field of protobuf type bool."""
    if isinstance(value, bytes):
        raise malformed(f"field {field} should be a varint")
    return value != 0
