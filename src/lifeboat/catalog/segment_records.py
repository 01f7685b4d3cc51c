"""The records of a version 2 segment: each event as the MVCC row etcd wrote for it.

A record is a fixed 30-byte head, then the row's value (all integers big-endian)::

    offset  size  field
    0       8     main revision    ┐
    8       1     "_"              ├ etcd's revision key: the row's key in bucket "key"
    9       8     sub revision     ┘
    17      1     "p" a put, "t" a delete (etcd's tombstone mark: the row key ends with it)
    18      8     lease id (signed; 0 = none, always 0 for a delete)
    26      4     N, the value's length
    30      N     the row's value: mvccpb.KeyValue

So the row etcd holds for the event is ``record[0:17]`` (a put) or ``record[0:18]`` (a
delete) as its key and the N bytes as its value; replaying a segment copies them. A put's
value is the ``mvccpb.KeyValue`` the watch delivered (key, create_revision, mod_revision,
version, value, lease): etcd stores that very message and sends it to watchers
(server/mvcc/kvstore_txn.go ``put``, watchable_store_txn.go ``End``). A delete's is a
KeyValue holding only the key (kvstore_txn.go ``delete``). The lease is repeated in the head
so that finding the leases held at a point needs no protobuf decoding.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

from lifeboat.etcdapi.model import EventType, KeyValue, WatchEvent
from lifeboat.etcdapi.wire import read_varint, write_varint
from lifeboat.snapshot.mvcc import KEY_TAG, decode_key_value
from lifeboat.snapshot.replay import encode_key_value, tombstone_value

HEAD = struct.Struct(">Q1sQ1sqI")
HEAD_SIZE = HEAD.size  # 30
PUT = b"p"
DELETE = b"t"


def event_record(revision: int, sub: int, event: WatchEvent) -> tuple[bytes, bytes]:
    """The head and value of ``event``, the ``sub``-th operation of ``revision``."""
    kv = event.kv
    if kv.mod_revision != revision:
        raise ValueError(f"an event of revision {revision} says it was modified at {kv.mod_revision}")
    if event.type is EventType.PUT:
        value = event.kv_bytes if event.kv_bytes is not None else encode_key_value(kv)
        return HEAD.pack(revision, b"_", sub, PUT, kv.lease, len(value)), value
    value = tombstone_value(kv.key)
    return HEAD.pack(revision, b"_", sub, DELETE, 0, len(value)), value


def key_of(body: bytes | memoryview, value_at: int, value_end: int) -> bytes:
    """The etcd key in the KeyValue at ``body[value_at:value_end]`` (its first field)."""
    if body[value_at] != KEY_TAG:
        raise ValueError("a record's value does not start with its key")
    size = body[value_at + 1]
    start = value_at + 2
    if size >= 0x80:
        size, start = read_varint(body, value_at + 1, value_end)
    if start + size > value_end:
        raise ValueError("a record's key runs past its value")
    return bytes(body[start : start + size])  # a copy of a view; a bytes slice as it is


def version_of(body: bytes, value_at: int, value_end: int) -> int:
    """The version (field 4) of the KeyValue at ``body[value_at:value_end]``, 0 where it has
    none; read in place where the value is laid out as etcd writes it."""
    # etcd writes a put's fields in order: a key under 128 bytes, create and mod revisions,
    # then the version, under 128 for most keys. Read that layout byte by byte; else decode.
    if value_end - value_at < 2 or body[value_at] != KEY_TAG or body[value_at + 1] >= 0x80:
        return decode_key_value(body, value_at, value_end).version
    pos = value_at + 2 + body[value_at + 1]
    for tag in (0x10, 0x18):  # create_revision, mod_revision: varints
        if pos >= value_end or body[pos] != tag:
            return decode_key_value(body, value_at, value_end).version
        pos += 1
        while pos < value_end and body[pos] & 0x80:
            pos += 1
        pos += 1
    if pos + 1 < value_end and body[pos] == 0x20 and body[pos + 1] < 0x80:
        return body[pos + 1]
    return decode_key_value(body, value_at, value_end).version


# A put's mvccpb.KeyValue after its key field, as etcd writes it (fields in order, zeros left
# out; create and mod revisions never are): create_revision, mod_revision (group 1), version,
# and the value's length (group 2) if it has a value; each a varint of at most 10 bytes. The
# value is followed by the lease's field (:func:`lease_field`), or nothing.
PUT_FIELDS = re.compile(rb"\x10[\x80-\xff]{0,9}[\x00-\x7f]\x18([\x80-\xff]{0,9}[\x00-\x7f])"
                         rb"(?:\x20[\x80-\xff]{0,9}[\x00-\x7f])?(?:\x2a([\x80-\xff]{0,9}[\x00-\x7f]))?", re.DOTALL)


def lease_field(lease: int) -> bytes:
    """A KeyValue's lease field (6) as etcd writes it: nothing for no lease."""
    return b"\x30" + write_varint(lease & 0xFFFFFFFFFFFFFFFF) if lease else b""


def varint_value(data: bytes) -> int:
    """The number a varint's bytes (as :data:`PUT_FIELDS` finds them) say."""
    number = 0
    for shift, byte in enumerate(data):
        number |= (byte & 0x7F) << (7 * shift)
    return number


def iter_records(body: bytes) -> Iterator[tuple[int, int, bytes, int, int, int]]:
    """``(main, sub, kind, lease, value start, value end)`` of every record, framing checked."""
    pos, end = 0, len(body)
    while pos < end:
        if pos + HEAD_SIZE > end:
            raise ValueError(f"a record head is cut off at byte {pos}")
        main, mark, sub, kind, lease, size = HEAD.unpack_from(body, pos)
        value_at = pos + HEAD_SIZE
        pos = value_at + size
        if mark != b"_" or kind not in (PUT, DELETE):
            raise ValueError(f"a record at byte {value_at - HEAD_SIZE} is not a revision record")
        if pos > end:
            raise ValueError(f"a record's value runs past the segment's end at byte {value_at}")
        yield main, sub, kind, lease, value_at, pos


def record_event(body: bytes, main: int, kind: bytes, lease: int, value_at: int, value_end: int) -> WatchEvent:
    """The watch event a record holds, checked against its head."""
    if kind == DELETE:
        return WatchEvent(EventType.DELETE, KeyValue(key_of(body, value_at, value_end), b"", 0, main, 0))
    kv = decode_key_value(body, value_at, value_end)
    if kv.mod_revision != main:
        raise ValueError(f"an event of revision {main} says it was modified at {kv.mod_revision}")
    if kv.lease != lease:
        raise ValueError(f"an event of revision {main} names lease {kv.lease} in its value, {lease} in its head")
    return WatchEvent(EventType.PUT, kv, kv_bytes=body[value_at:value_end])
