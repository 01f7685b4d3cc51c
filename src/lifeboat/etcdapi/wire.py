"""protobuf's wire format, the part lifeboat reads and writes by hand.

Two readers walk raw protobuf without generated classes, for speed and to survive damage:
the snapshot reader (etcd's ``mvccpb.KeyValue`` rows) and the Kubernetes object decoder (the
objects kube-apiserver stores in etcd). They share the wire types and the varint here.
Facts from protobuf's encoding guide: a varint is at most 10 bytes of 7 bits each, low
group first; a tag is ``field number << 3 | wire type``.
"""

from __future__ import annotations

import mmap
from typing import Union

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5

MAX_VARINT_BYTES = 10

# What the readers walk: a value's bytes, or a snapshot mapped into memory.
WireBuffer = Union[bytes, mmap.mmap]


class MalformedValue(ValueError):
    """Bytes that do not decode as the protobuf (or etcd record) they should be."""


def read_varint(buf: WireBuffer | memoryview, pos: int, end: int | None = None) -> tuple[int, int]:
    """Read one base-128 varint at ``pos`` (before ``end``); return (value, position after it)."""
    result = 0
    shift = 0
    end = len(buf) if end is None else end
    for _ in range(MAX_VARINT_BYTES):
        if pos >= end:
            raise MalformedValue(f"varint truncated at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise MalformedValue(f"varint longer than {MAX_VARINT_BYTES} bytes before byte {pos}")


def write_varint(value: int) -> bytes:
    """``value`` as a varint; a negative int64 takes ten bytes (two's complement, as protobuf writes it)."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def to_int64(raw: int) -> int:
    """A varint read as protobuf's int64: two's complement, so large values are negative."""
    raw &= 0xFFFFFFFFFFFFFFFF
    return raw - (1 << 64) if raw >= 1 << 63 else raw
