"""Offline checks that a restored data dir holds the snapshot's keyspace.

``etcdutl snapshot restore`` copies the snapshot's db and rewrites only membership and
consistent-index metadata (buckets ``members``, ``cluster``, ``meta``), so a whole-file
hash cannot match. The MVCC history in bucket ``key`` is carried over row for row;
``--bump-revision`` only adds rows above the snapshot's revision. So the sound comparison
is a digest of bucket ``key`` up to the snapshot's revision, on both files.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import struct
from dataclasses import dataclass

from lifeboat.snapshot import KeyValue, iter_latest
from lifeboat.snapshot.bbolt import BoltFile

_KEY_BUCKET = b"key"
_MAIN = struct.Struct(">Q")
_LENGTH = struct.Struct(">II")


@dataclass(frozen=True)
class KeyspaceDigest:
    """sha256 over every (revision key, KeyValue) row of bucket ``key`` up to a revision."""

    rows: int
    last_revision: int
    sha256: str


def keyspace_digest(path: str | os.PathLike[str], up_to_revision: int | None = None) -> KeyspaceDigest:
    """Digest bucket ``key`` of the db at ``path``, stopping after ``up_to_revision``."""
    digest = hashlib.sha256()
    rows = last = 0
    with BoltFile.open(path) as db:
        bucket = db.bucket(_KEY_BUCKET)
        if bucket is not None:
            for key, value, _buf, _start, _end in db.items(bucket, db.new_seen()):
                if len(key) < _MAIN.size or value is None:
                    raise db.corrupted("bucket 'key' holds a row that is not an etcd revision")
                main: int = _MAIN.unpack_from(key)[0]
                if up_to_revision is not None and main > up_to_revision:
                    break  # rows are in revision order
                digest.update(_LENGTH.pack(len(key), len(value)))
                digest.update(key)
                digest.update(value)
                rows += 1
                last = main
    return KeyspaceDigest(rows, last, digest.hexdigest())


def sample_keys(path: str | os.PathLike[str], count: int = 32) -> list[KeyValue]:
    """Up to ``count`` live keys spread over the keyspace (chosen by a hash of the key)."""
    chosen: list[tuple[bytes, bytes, KeyValue]] = []
    for kv in iter_latest(path):
        rank = hashlib.blake2b(kv.key, digest_size=8).digest()
        entry = (bytes(255 - b for b in rank), kv.key, kv)  # keeps the smallest ranks
        if len(chosen) < count:
            heapq.heappush(chosen, entry)
        elif entry[0] > chosen[0][0]:
            heapq.heapreplace(chosen, entry)
    return [kv for _rank, _key, kv in sorted(chosen, key=lambda entry: entry[1])]
