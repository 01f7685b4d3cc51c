"""etcd's HashKV of a snapshot, computed offline, to compare with a restored member's answer.

How etcd 3.4/3.5 computes ``HashKV(rev)`` (server/mvcc/kvstore.go, ``HashByRev``): a
CRC-32 Castagnoli over the bucket name ``key``, then the raw row key and value of every row
of bucket ``key`` whose main revision is <= ``rev``. Rows at or below the compaction revision
``C`` count only if they are the newest revision of a key still live at ``rev`` (the index's
``Keep(rev)``), unless no key is live, when all count. On start etcd takes ``C`` from bucket
``meta``: the larger of ``finishedCompactRev`` and ``scheduledCompactRev`` (it redoes a
scheduled compaction). It refuses ``HashKV(rev)`` for ``rev <= C`` in 3.4.23 and 3.5.1.

``etcdutl snapshot restore`` rewrites the membership and ``meta`` buckets but not ``key``
(without ``--bump-revision``), so the restored member's HashKV at the snapshot's revision
must equal this number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import google_crc32c

from lifeboat.snapshot import read_meta
from lifeboat.snapshot.bbolt import BoltFile
from lifeboat.snapshot.mvcc import KEY_BUCKET, decode_key_value, decode_revision


@dataclass(frozen=True)
class OfflineHashKV:
    """``hash`` is None when etcd cannot answer HashKV at ``revision`` (it is compacted)."""

    revision: int
    compact_revision: int | None
    hash: int | None


def offline_hash_kv(path: str | os.PathLike[str], revision: int) -> OfflineHashKV:
    """What etcd's ``HashKV(revision)`` returns once ``path`` is restored and started."""
    meta = read_meta(path)
    marks = [m for m in (meta.finished_compact_revision, meta.scheduled_compact_revision)
             if m is not None]
    compact = max(marks) if marks else None
    if compact is not None and revision <= compact:
        return OfflineHashKV(revision, compact, None)
    keep = _live_rows(path, revision) if compact is not None else None
    crc = google_crc32c.extend(0, KEY_BUCKET)
    with BoltFile.open(path) as db:
        bucket = db.bucket(KEY_BUCKET)
        if bucket is not None:
            for row_key, value, _buf, _start, _end in db.items(bucket, db.new_seen()):
                main, _sub, _tomb = decode_revision(row_key)
                if main > revision or value is None:
                    continue
                if compact is not None and main <= compact and keep and row_key not in keep:
                    continue
                crc = google_crc32c.extend(crc, row_key)
                crc = google_crc32c.extend(crc, value)
    return OfflineHashKV(revision, compact, crc)


def _live_rows(path: str | os.PathLike[str], revision: int) -> set[bytes]:
    """Row keys holding the newest revision of each key live at ``revision``."""
    newest: dict[bytes, bytes] = {}
    with BoltFile.open(path) as db:
        bucket = db.bucket(KEY_BUCKET)
        if bucket is None:
            return set()
        for row_key, value, buf, start, end in db.items(bucket, db.new_seen()):
            main, _sub, tombstone = decode_revision(row_key)
            if main > revision or value is None:
                continue
            user_key = decode_key_value(buf, start, end).key
            if tombstone:
                newest.pop(user_key, None)
            else:
                newest[user_key] = row_key
    return set(newest.values())
