"""Decoding etcd's revision keys and mvccpb.KeyValue values."""

from __future__ import annotations

import struct

import pytest

from lifeboat.snapshot.mvcc import MalformedValue, decode_key_value, decode_revision


def varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def test_key_value_fields_decode() -> None:
    raw = (
        field(1, b"/registry/pods/a") + field(2, 5) + field(3, 300) + field(4, 7)
        + field(5, b"v" * 200) + field(6, 0x7FFF_0000_0000_0001)
    )
    kv = decode_key_value(raw, 0, len(raw))
    assert (kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (
        b"/registry/pods/a", 5, 300, 7, 0x7FFF_0000_0000_0001,
    )
    assert kv.value == b"v" * 200


def test_unknown_fields_are_skipped_and_negative_int64_is_signed() -> None:
    raw = field(1, b"k") + field(9, b"future") + varint(10 << 3 | 1) + b"12345678" + field(2, -1)
    kv = decode_key_value(raw, 0, len(raw))
    assert (kv.key, kv.create_revision, kv.value) == (b"k", -1, b"")


@pytest.mark.parametrize("raw", [b"\x0a\x05abc", b"\x10", b"\x10\xff", b"\x0f"])
def test_malformed_key_value_is_rejected(raw: bytes) -> None:
    with pytest.raises(MalformedValue):
        decode_key_value(raw, 0, len(raw))


def test_revision_keys_decode_with_tombstone_mark() -> None:
    key = struct.pack(">Q", 12) + b"_" + struct.pack(">Q", 3)
    assert decode_revision(key) == (12, 3, False)
    assert decode_revision(key + b"t") == (12, 3, True)


@pytest.mark.parametrize("key", [b"short", b"\0" * 17, b"\0" * 8 + b"_" + b"\0" * 8 + b"x"])
def test_non_revision_keys_are_rejected(key: bytes) -> None:
    with pytest.raises(MalformedValue):
        decode_revision(key)
