"""etcd's MVCC data inside a snapshot: live keys, compaction marks, cluster members.

Facts from etcd 3.4/3.5 (server/mvcc/revision.go, kvstore.go, kvstore_compaction.go,
api/mvccpb/kv.proto, etcdserver/api/membership/store.go):

- Bucket ``key`` maps a revision (8-byte big-endian main, ``_``, 8-byte big-endian sub, and
  a trailing ``t`` for a deletion) to a protobuf ``mvccpb.KeyValue``; rows sort by revision.
- Bucket ``meta`` holds ``consistent_index`` (8-byte big-endian) and, once compacted,
  ``scheduledCompactRev``/``finishedCompactRev`` (a revision in the 17-byte form above).
- Bucket ``members`` maps a member id in hex to the JSON of etcd's ``Member``;
  ``members_removed`` holds the hex ids of removed members.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .bbolt import BUCKET_LEAF_FLAG, BoltFile, Buffer, LeafInMemory
from lifeboat.etcdapi.wire import MalformedValue as MalformedValue  # a bad row or revision
from lifeboat.etcdapi.wire import read_varint, to_int64
from lifeboat.etcdapi.model import KeyValue as KeyValue  # the value a live Range returns too
from lifeboat.etcdapi.model import Member

KEY_BUCKET = b"key"
META_BUCKET = b"meta"
MEMBERS_BUCKET = b"members"
MEMBERS_REMOVED_BUCKET = b"members_removed"

_REVISION = struct.Struct(">QxQ")
_REVISION_SIZE = 17
_TOMBSTONE = ord("t")
_UNDERSCORE = ord("_")
KEY_TAG = 1 << 3 | 2  # mvccpb.KeyValue field 1 (key), length-delimited: etcd writes it first
_U64 = struct.Struct(">Q")


@dataclass(frozen=True)
class SnapshotMeta:
    """Bookkeeping from bucket ``meta``; a field is None when etcd never wrote it."""

    consistent_index: int | None
    term: int | None
    scheduled_compact_revision: int | None
    finished_compact_revision: int | None

    def state_revision(self, last_row: int) -> int:
        """The revision a store whose newest row is at ``last_row`` holds the state of.

        etcd's revision is the newest row or the compaction mark, whichever is higher: a
        compaction removes a tombstone at its own revision (kvstore.go restore, keyIndex.compact),
        so the last row can be below it. An empty store is at revision 1 (etcd's kvstore starts
        its revision there)."""
        return max(last_row, self.finished_compact_revision or 0, self.scheduled_compact_revision or 0, 1)


def decode_key_value(buf: Buffer, start: int, end: int) -> KeyValue:
    """Decode an ``mvccpb.KeyValue`` from ``buf[start:end]``; unknown fields are skipped."""
    if not isinstance(buf, bytes):  # one read of the value, then decoded in memory
        buf, start, end = buf[start:end], 0, end - start
    fields: dict[int, int | bytes] = {}
    pos = start
    while pos < end:
        tag, pos = read_varint(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            raw, pos = read_varint(buf, pos, end)
            fields[number] = to_int64(raw)
        elif wire_type == 2:
            size, pos = read_varint(buf, pos, end)
            if pos + size > end:
                raise MalformedValue(f"field {number} runs past the value")
            fields[number] = bytes(buf[pos : pos + size])
            pos += size
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            raise MalformedValue(f"wire type {wire_type} in field {number}")
    if pos != end:
        raise MalformedValue("a fixed-size field runs past the value")
    return KeyValue(
        key=_bytes_field(fields, 1),
        value=_bytes_field(fields, 5),
        create_revision=_int_field(fields, 2),
        mod_revision=_int_field(fields, 3),
        version=_int_field(fields, 4),
        lease=_int_field(fields, 6),
    )


def _bytes_field(fields: dict[int, int | bytes], number: int) -> bytes:
    value = fields.get(number, b"")
    if not isinstance(value, bytes):
        raise MalformedValue(f"field {number} should be bytes")
    return value


def _int_field(fields: dict[int, int | bytes], number: int) -> int:
    value = fields.get(number, 0)
    if not isinstance(value, int):
        raise MalformedValue(f"field {number} should be an integer")
    return value


def decode_revision(key: bytes) -> tuple[int, int, bool]:
    """(main, sub, is_tombstone) of a row key in bucket ``key``."""
    if len(key) not in (_REVISION_SIZE, _REVISION_SIZE + 1) or key[8] != ord("_"):
        raise MalformedValue(f"{key!r} is not an etcd revision")
    if len(key) == _REVISION_SIZE + 1 and key[-1] != _TOMBSTONE:
        raise MalformedValue(f"{key!r} has an unknown revision marker")
    main, sub = _REVISION.unpack_from(key)
    return main, sub, len(key) == _REVISION_SIZE + 1


def served_revision(revision: int) -> int:
    """The revision etcd serves a store at whose newest row is at ``revision``: a store starts at
    revision 1 (mvcc/kvstore.go), so one never written to, whose snapshot holds no key row and
    reads as revision 0, is served at 1. A watch from revision 0 means "from now", never
    compacted: what a bumped restore must refuse is a watch from the served revision."""
    return max(revision, 1)


def encode_revision(main: int, sub: int = 0) -> bytes:
    """The 17-byte row key of revision (main, sub) in bucket ``key`` (also ``meta``'s marks)."""
    return _U64.pack(main) + b"_" + _U64.pack(sub)


def iter_latest(path: str | os.PathLike[str], prefix: bytes = b"") -> Iterator[KeyValue]:
    """The live keys at the snapshot's revision, sorted by key; deleted keys are absent.

    Memory grows with the number of live keys under ``prefix`` (a few ints each), not
    with the file: values are decoded from the map only when yielded.
    """
    with latest_rows(path, prefix) as latest:
        for user_key in sorted(latest):
            buf, vstart, vend = latest.pop(user_key)
            yield decode_key_value(buf, vstart, vend)


@contextmanager
def latest_rows(path: str | os.PathLike[str], prefix: bytes = b"",
                into: dict[bytes, tuple[Buffer, int, int]] | None = None, *,
                txid: int | None = None) -> Iterator[dict[bytes, tuple[Buffer, int, int]]]:
    """Where each live key under ``prefix`` has its latest value: key -> (buffer, start, end).

    The buffers can be read only inside the ``with`` block. ``into``: the dict to fill, in
    row order (a subclass may decline keys in ``__setitem__`` to bound its memory; deleted
    keys are removed with ``pop``). ``txid``: the tree of that transaction (see
    :meth:`BoltFile.open`), not the newest.
    """
    with BoltFile.open(path, txid=txid) as db:
        latest: dict[bytes, tuple[Buffer, int, int]] = {} if into is None else into
        note_latest_rows(db, latest, prefix)
        yield latest


def note_latest_rows(db: BoltFile, latest: dict[bytes, tuple[Buffer, int, int]], prefix: bytes = b"", *,
                     from_revision: int = 0) -> None:
    """:func:`latest_rows` of an open ``db`` into ``latest``; with ``from_revision``, the rows
    from that revision on (and some before it: those sharing a leaf with it)."""
    bucket = db.bucket(KEY_BUCKET)
    if bucket is not None:
        from_key = encode_revision(from_revision) if from_revision else None
        for leaf, home, base in db.leaves_read_together(bucket, db.new_seen(), from_key=from_key):
            _note_latest(db, leaf, home, base, prefix, latest)


def _note_latest(db: BoltFile, leaf: LeafInMemory, home: Buffer, base: int, prefix: bytes,
                 latest: dict[bytes, tuple[Buffer, int, int]]) -> None:
    """Note the rows of ``leaf`` in ``latest``; a live key's value as its place in ``home``
    (``base`` is where the leaf's buffer starts there), not in that buffer, which the walk drops."""
    page = leaf[0]
    # Rows come in revision order, so a later row for the same key supersedes it.
    for flags, kstart, kend, vend in db.leaf_elements(leaf):
        if flags & BUCKET_LEAF_FLAG:
            raise db.corrupted("bucket 'key' contains a nested bucket")
        # The common shapes read directly (every full scan of bucket ``key`` goes through here):
        # a revision key of 17 bytes, or 18 ending in the tombstone mark; a KeyValue whose
        # key, its first field, is shorter than 128 bytes. Anything else goes to the decoders.
        size = kend - kstart
        if (size == _REVISION_SIZE or (size == _REVISION_SIZE + 1 and page[kend - 1] == _TOMBSTONE)) \
                and page[kstart + 8] == _UNDERSCORE:
            tombstone = size != _REVISION_SIZE
        else:
            tombstone = decode_revision(page[kstart:kend])[2]  # raises for a malformed one
        if kend == vend:
            continue  # etcd's revision bump row (see writer.bump_revision): no key, never served
        if vend - kend >= 2 and page[kend] == KEY_TAG and page[kend + 1] < 0x80 and kend + 2 + page[kend + 1] <= vend:
            user_key = page[kend + 2 : kend + 2 + page[kend + 1]]
        else:
            user_key = _user_key(page, kend, vend)
        if not user_key.startswith(prefix):
            continue
        if tombstone:
            latest.pop(user_key, None)
        else:
            latest[user_key] = (home, base + kend, base + vend)


def _user_key(buf: bytes, start: int, end: int) -> bytes:
    """Field 1 of an ``mvccpb.KeyValue``; etcd always writes it first."""
    tag, pos = read_varint(buf, start, end)
    if tag != KEY_TAG:
        return decode_key_value(buf, start, end).key
    size, pos = read_varint(buf, pos, end)
    if pos + size > end:
        raise MalformedValue("the key field runs past the value")
    return bytes(buf[pos : pos + size])


def read_meta(path: str | os.PathLike[str]) -> SnapshotMeta:
    """Consistent index, term and compaction marks from bucket ``meta``."""
    with BoltFile.open(path) as db:
        rows = _bucket_dict(db, META_BUCKET)
        return SnapshotMeta(
            consistent_index=_u64(rows.get(b"consistent_index")),
            term=_u64(rows.get(b"term")),
            scheduled_compact_revision=_compact_mark(rows.get(b"scheduledCompactRev")),
            finished_compact_revision=_compact_mark(rows.get(b"finishedCompactRev")),
        )


def read_members(path: str | os.PathLike[str]) -> tuple[list[Member], list[int]]:
    """(members, removed member ids) recorded in the snapshot, members sorted by id.

    Bucket ``members`` holds each member as JSON with the attributes MemberList reports.
    """
    with BoltFile.open(path) as db:
        members = [
            _member(key, value) for key, value in _bucket_dict(db, MEMBERS_BUCKET).items()
        ]
        removed = [int(key, 16) for key in _bucket_dict(db, MEMBERS_REMOVED_BUCKET)]
        return sorted(members, key=lambda m: m.id), sorted(removed)


def cluster_id_from_members(member_ids: Iterable[int]) -> int:
    """The cluster id etcd derives at bootstrap from its initial members' ids.

    etcd (server/etcdserver/api/membership/cluster.go, genID) hashes the sorted member
    ids, each as 8 big-endian bytes, with SHA-1 and keeps the first 8 bytes. Members
    added later do not change a cluster's id, so this only matches while the members
    are the initial ones (checked against etcd 3.4.23 and 3.5.1 in the tests).
    """
    packed = b"".join(struct.pack(">Q", i) for i in sorted(member_ids))
    return int.from_bytes(hashlib.sha1(packed).digest()[:8], "big")


def _bucket_dict(db: BoltFile, name: bytes) -> dict[bytes, bytes]:
    bucket = db.bucket(name)
    if bucket is None:
        return {}
    return {
        key: value
        for key, value, _buf, _start, _end in db.items(bucket, db.new_seen())
        if value is not None
    }


def _u64(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    if len(raw) != 8:
        raise MalformedValue(f"expected an 8-byte integer, found {len(raw)} bytes")
    value: int = _U64.unpack(raw)[0]
    return value


def _compact_mark(raw: bytes | None) -> int | None:
    return None if raw is None else decode_revision(raw)[0]


def _member(key: bytes, value: bytes) -> Member:
    try:
        doc = json.loads(value)
        return Member(
            id=int(key, 16),
            name=str(doc.get("name", "")),
            peer_urls=tuple(str(u) for u in doc.get("peerURLs") or ()),
            client_urls=tuple(str(u) for u in doc.get("clientURLs") or ()),
            is_learner=bool(doc.get("isLearner", False)),
        )
    except (AttributeError, TypeError, UnicodeDecodeError) as exc:
        raise MalformedValue(f"member {key!r} is not etcd member JSON") from exc


LEASE_BUCKET = b"lease"


def read_lease_ids(path: str | os.PathLike[str]) -> frozenset[int]:
    """The ids of the leases recorded in bucket ``lease`` (8-byte big-endian signed ids)."""
    with BoltFile.open(path) as db:
        ids = set()
        for key in _bucket_dict(db, LEASE_BUCKET):
            if len(key) != 8:
                raise MalformedValue(f"lease id {key!r} is not 8 bytes")
            raw: int = _U64.unpack(key)[0]
            ids.add(raw - (1 << 64) if raw >= 1 << 63 else raw)
        return frozenset(ids)
