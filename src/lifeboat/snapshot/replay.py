"""Captured watch events as the MVCC rows etcd itself would have written for them.

Facts from etcd 3.4/3.5 (server/mvcc/kvstore_txn.go, watchable_store_txn.go,
server/lease/lessor.go, api/mvccpb/kv.proto, server/lease/leasepb/lease.proto):

- A put at (main, sub) is the row ``main(8 BE) '_' sub(8 BE)`` in bucket ``key`` whose value
  is the ``mvccpb.KeyValue`` the watch event carries (key, create/mod revision, version,
  value, lease; proto3, so zero fields are left out).
- A delete is the row with a trailing ``t`` whose value is a KeyValue holding only the key;
  the watch event's ``mod_revision`` is patched in by the watch, not stored.
- The sub revision is the operation's index among the writes of its transaction, which is
  the order the watch delivers a revision's events in.
- Bucket ``lease`` maps the lease id (8-byte big-endian) to ``leasepb.Lease`` {ID, TTL,
  RemainingTTL}. On start etcd re-attaches every key's lease from this bucket; a key whose
  lease is missing keeps the id but is attached to nothing and would never expire.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from lifeboat.etcdapi.wire import write_varint
from lifeboat.etcdapi.model import EventType, KeyValue, WatchEvent

_REVISION = struct.Struct(">QcQ")
_LEASE_ID = struct.Struct(">Q")
TOMBSTONE = b"t"
LEASE_BUCKET = b"lease"


def _bytes_field(number: int, data: bytes) -> bytes:
    return write_varint(number << 3 | 2) + write_varint(len(data)) + data if data else b""


def _int_field(number: int, value: int) -> bytes:
    return write_varint(number << 3) + write_varint(value) if value else b""


def encode_key_value(kv: KeyValue) -> bytes:
    """``mvccpb.KeyValue`` bytes, field by field as etcd's generated marshaller writes them."""
    return encode_fields(kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease)


def encode_fields(key: bytes, create_revision: int, mod_revision: int, version: int, value: bytes,
                  lease: int) -> bytes:
    """:func:`encode_key_value` without building a :class:`KeyValue` first (the replay's hot path)."""
    return b"".join((
        _bytes_field(1, key), _int_field(2, create_revision), _int_field(3, mod_revision),
        _int_field(4, version), _bytes_field(5, value), _int_field(6, lease),
    ))


def tombstone_value(key: bytes) -> bytes:
    """A delete's row value: a KeyValue holding only the key."""
    return _bytes_field(1, key)


def revision_key(main: int, sub: int, tombstone: bool = False) -> bytes:
    return _REVISION.pack(main, b"_", sub) + (TOMBSTONE if tombstone else b"")


def event_row(main: int, sub: int, event: WatchEvent) -> tuple[bytes, bytes]:
    """The row etcd wrote for ``event`` at revision (``main``, ``sub``)."""
    if event.type is EventType.DELETE:
        return revision_key(main, sub, True), tombstone_value(event.kv.key)
    return revision_key(main, sub), encode_key_value(event.kv)


def event_rows(events: Iterable[tuple[int, int, WatchEvent]]) -> Iterator[tuple[bytes, bytes]]:
    for main, sub, event in events:
        yield event_row(main, sub, event)


def lease_row(lease_id: int, ttl: int) -> tuple[bytes, bytes]:
    """A ``lease`` bucket row for a lease granted ``ttl`` seconds (RemainingTTL 0: the full TTL)."""
    value = _int_field(1, lease_id) + _int_field(2, ttl)
    return _LEASE_ID.pack(lease_id & 0xFFFFFFFFFFFFFFFF), value


def lease_id_of_row(key: bytes) -> int:
    raw: int = _LEASE_ID.unpack(key)[0]
    return raw - (1 << 64) if raw >= 1 << 63 else raw
