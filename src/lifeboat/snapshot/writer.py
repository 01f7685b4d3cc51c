"""Writing a new etcd backend file (bbolt) from a source file plus changes, offline.

The source is never modified. The new file starts as a byte copy of the source's pages
(an in-kernel copy, like ``cp``); the changed pages are then written after the source's
high-water mark (copy-on-write, see :mod:`.tree_writer`) and a new meta page names the new
root, one transaction later than the source's. The source's pages that the new tree no
longer references become free pages.

The new meta records no freelist (bbolt's "not synced" marker). etcd 3.4 and 3.5 open
their backend that way themselves (``NoFreelistSync``), and bbolt v1.3.x rebuilds the
freelist on open by walking every bucket (db.go ``loadFreelist``/``freepages``), as do
``Tx.Check`` and ``etcdutl snapshot status`` on a read-only open.

With ``trailer=True`` the sha256 of the db bytes is appended, as etcd's snapshot stream
does, so ``etcdutl snapshot restore`` accepts the file without ``--skip-hash-check``.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from lifeboat.durable import fsync_dir
from lifeboat.errors import IntegrityError, NoRoom, OperationFailed, SnapshotFormatError, UsageError
from lifeboat.waits import finished

from .bbolt import (
    BUCKET_HEADER,
    BUCKET_LEAF_FLAG,
    MAGIC,
    META,
    META_CHECKSUMMED,
    META_PAGE,
    NO_FREELIST,
    PAGE_HEADER,
    VERSION,
    BoltFile,
    BucketRef,
    fnv64a,
)
from .check import check_snapshot
from .mvcc import KEY_BUCKET, META_BUCKET, MalformedValue, decode_revision, encode_revision, read_meta
from .trailer import TRAILER_SIZE, check_trailer, has_trailer_length, hash_range, read_exactly
from .tree_writer import MAX_KEY_SIZE, Edits, Item, PageSink, TreeRewrite

SCHEDULED_COMPACT_KEY = b"scheduledCompactRev"
# etcd's restore guide suggests a bump of a billion: more writes than any cluster made
# between the backup and the disaster, so every revision a client saw is left behind.
SUGGESTED_BUMP = 1_000_000_000
MAX_REVISION = (1 << 63) - 1
_COPY_CHUNK = 64 << 20
_HASH_CHUNK = 4 << 20
_T = TypeVar("_T")


@dataclass(frozen=True)
class BucketChanges:
    """Changes to one top-level bucket.

    ``puts`` insert or replace keys anywhere (meant for a few keys); ``deletes`` remove
    keys if present. ``appends`` is consumed once, as a stream: its keys must be strictly
    ascending and greater than every key of the bucket and of ``puts`` (etcd's MVCC rows
    of later revisions); it may be millions of rows long.
    """

    bucket: bytes
    puts: Mapping[bytes, bytes] = field(default_factory=dict)
    deletes: frozenset[bytes] = frozenset()
    appends: Iterable[tuple[bytes, bytes]] = ()


@dataclass(frozen=True)
class WrittenDb:
    """The file :func:`write_db` produced."""

    path: Path
    page_size: int
    high_water: int
    txid: int
    pages_written: int
    db_size: int
    file_size: int
    has_trailer: bool
    db_sha256: str | None  # the trailer's; None without one (not computed)


@dataclass(frozen=True)
class BumpResult:
    """A revision bump: the source's latest main revision and the one written."""

    old_revision: int
    new_revision: int
    written: WrittenDb


def write_db(
    source: Path,
    dest: Path,
    changes: Sequence[BucketChanges],
    *,
    trailer: bool = True,
    append_bytes_hint: int = 0,
    source_checked: bool = False,
) -> WrittenDb:
    """Write ``dest``: the bbolt db of ``source`` with ``changes`` applied.

    ``source`` is a bbolt db or an etcd snapshot (with or without the sha256 trailer, which
    must match when present). ``dest`` is written beside itself under a temporary name,
    fsynced and renamed into place. Free disk space for the copy, the puts and
    ``append_bytes_hint`` is checked before anything is written. ``source_checked``: this
    process checked the source's trailer already (it fetched and verified the file), so it is
    not read again for it: with a trailer to write, the pass that hashes the new db checks the
    source's bytes against the source's trailer too.
    """
    source, dest = Path(source), Path(dest)
    edits = _all_edits(changes)
    _refuse_same_file(source, dest)
    with BoltFile.open(source) as db:
        buckets, put_bytes = _checked_buckets(db, edits, changes)
        _require_free_space(dest, db.meta.tx_size + 2 * put_bytes + append_bytes_hint)
        with _replacing(dest) as (tmp, out):
            # Decoding faults in the source and OSErrors here are translated on the way out:
            # by _replacing (writing) and by BoltFile.open (a malformed source).
            sink, txid, db_size, meta = _new_pages(db, out, changes, edits, buckets)
            digest = _complete(db, out, tmp, meta, _spare_meta(db) * db.page_size, db_size, trailer,
                               check_source=db.has_trailer and not source_checked)
            if digest is not None:
                out.seek(db_size)
                out.write(bytes.fromhex(digest))
        return WrittenDb(
            path=dest,
            page_size=db.page_size,
            high_water=sink.next_pgid,
            txid=txid,
            pages_written=sink.pages_written,
            db_size=db_size,
            file_size=db_size + TRAILER_SIZE if trailer else db_size,
            has_trailer=trailer,
            db_sha256=digest,
        )


def commit_in_place(snapshot: Path, changes: Sequence[BucketChanges], *, append_bytes_hint: int = 0,
                    record: Callable[[Replayed], None] | None = None) -> WrittenDb:
    """Apply ``changes`` to the etcd snapshot file ``snapshot`` itself; it ends with etcd's trailer,
    or, with ``record``, with no trailer but a :class:`Replayed` record of it.

    For a snapshot this process fetched and checked (its own work file): nothing is copied.
    The write is ordered so that an interruption leaves either the old tree or the complete
    new one, as bbolt commits (db.go, tx.go): the new pages go after the high-water mark (over
    the old trailer), then the trailer of the new db (the sha256 of its bytes with the new meta
    page in place), fsynced; then the new meta, one txid later, over the older of the two meta
    pages, fsynced. Before that last write the file's meta still names the old tree, whose
    trailer it no longer has: a caller that finds the old revision there writes again.
    The new pages are fsynced while the new db's sha256 is computed, before the trailer; the
    file's pages from before (a fetched snapshot, mostly not on the disk yet) are fsynced while
    the new pages are computed.

    With ``record`` the whole db is not hashed: ``record`` is given, before the meta is written
    (it must keep it durably), what the commit overwrote (the older meta page, the trailer) and
    the sha256 of the pages it appended, hashed while they are fsynced; the file then has no
    trailer. :func:`commit_member_db` checks the base's bytes against the base's trailer and the
    appended ones against the record in its one pass over the file.
    """
    snapshot = Path(snapshot)
    edits = _all_edits(changes)
    with BoltFile.open(snapshot) as db:
        if record is not None and not db.has_trailer:
            raise UsageError(f"{snapshot} has no sha256 trailer; only a checked snapshot is replayed into")
        buckets, put_bytes = _checked_buckets(db, edits, changes)
        _require_free_space(snapshot, 2 * put_bytes + append_bytes_hint)
        meta_offset = _spare_meta(db) * db.page_size
        base = _overwritten(db, meta_offset)
        try:
            with snapshot.open("r+b") as out, ThreadPoolExecutor(1, thread_name_prefix="lifeboat-fsync") as early:
                # A snapshot just fetched is mostly still in the page cache, unwritten (the kernel
                # writes dirty pages back after 30 s): it goes to the disk while the new pages are
                # computed, instead of in the fsync before the meta page.
                fetched_synced = early.submit(os.fsync, out.fileno())
                sink, txid, db_size, meta = _new_pages(db, out, changes, edits, buckets)
                finished(fetched_synced)
                out.truncate(db_size)
                out.flush()
                if record is not None:
                    # The appended pages go to the disk while they are hashed (a tenth of the db).
                    appended = _synced_meanwhile(out, lambda: _range_sha256(snapshot, base.db_size, db_size))
                    record(Replayed(base, db_size, meta, bytes.fromhex(appended)))
                    _write_meta(out, meta_offset, meta)
                    return WrittenDb(snapshot, db.page_size, sink.next_pgid, txid, sink.pages_written, db_size,
                                     db_size, False, None)
                # The new pages go to the disk while the new db is hashed, and in the same pass the
                # base's own bytes, which must still match its trailer (a byte changed on disk since
                # the fetch's check would be certified by the new trailer); the meta page is written
                # only once both are done.
                fetched = hashlib.sha256() if _as_fetched(db) else None
                digest = _synced_meanwhile(out, lambda: _new_db_sha256(db, snapshot, meta, meta_offset, db_size,
                                                                       fetched))
                if fetched is not None and fetched.digest() != base.trailer:
                    raise _changed_since_fetch(snapshot, "nothing was committed into it")
                out.seek(db_size)
                out.write(bytes.fromhex(digest))
                out.flush()
                os.fsync(out.fileno())
                _write_meta(out, meta_offset, meta)
        except OSError as exc:  # raised here, not as a read fault of the source
            raise _write_failure(snapshot, exc) from exc
        return WrittenDb(snapshot, db.page_size, sink.next_pgid, txid, sink.pages_written, db_size,
                         db_size + TRAILER_SIZE, True, digest)


def _synced_meanwhile(out: BinaryIO, work: Callable[[], _T]) -> _T:
    """``work()``'s result, run while ``out`` is fsynced in a thread (fsync and hashlib both
    release the GIL); returns once both are done."""
    with ThreadPoolExecutor(1, thread_name_prefix="lifeboat-fsync") as pool:
        synced = pool.submit(os.fsync, out.fileno())
        result = work()
        finished(synced)
    return result


@dataclass(frozen=True)
class Overwritten:
    """What :func:`commit_member_db` overwrites of a snapshot file: with it, the snapshot's own
    bytes can be read back (and hashed against its trailer) after the commit."""

    txid: int  # the snapshot's transaction; its meta page stays as it was
    db_size: int  # the snapshot's db bytes (before its trailer)
    meta_offset: int  # the older meta page, which the new transaction's replaces
    meta_page: bytes
    trailer: bytes  # etcd's sha256 of the snapshot's db bytes; empty for a replayed db (none)

    def to_json(self) -> bytes:
        return json.dumps(self._fields()).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Overwritten:
        """SnapshotFormatError unless ``data`` is what :meth:`to_json` wrote."""
        return _parsed(data, "commit", lambda raw: cls._of(raw))

    def _fields(self) -> dict[str, object]:
        return {"txid": self.txid, "db_size": self.db_size, "meta_offset": self.meta_offset,
                "meta_page": base64.b64encode(self.meta_page).decode(), "trailer": self.trailer.hex()}

    @classmethod
    def _of(cls, raw: Any) -> Overwritten:
        found = cls(int(raw["txid"]), int(raw["db_size"]), int(raw["meta_offset"]),
                    base64.b64decode(raw["meta_page"], validate=True), bytes.fromhex(raw["trailer"]))
        if len(found.trailer) not in (0, TRAILER_SIZE) or found.meta_offset + len(found.meta_page) > found.db_size:
            raise ValueError("inconsistent")
        return found


def _parsed(data: bytes, what: str, parse: Callable[[Any], _T]) -> _T:
    """``parse`` of the JSON ``data``, a record of a ``what`` into a snapshot; SnapshotFormatError
    when it is unreadable or inconsistent."""
    try:
        return parse(json.loads(data))
    except (ValueError, TypeError, KeyError) as exc:
        raise SnapshotFormatError(f"the record of a {what} into a snapshot is unreadable or inconsistent "
                                  f"({exc!r:.80})") from None


@dataclass(frozen=True)
class Replayed:
    """What :func:`commit_in_place` keeps instead of a new trailer: what it overwrote of the base
    snapshot, and what it wrote. With it the file's bytes are provable without a trailer: those
    below ``base.db_size`` (the overwritten meta page put back) by the base's trailer, those
    above by ``appended_sha256``, the new meta page by its copy here."""

    base: Overwritten
    db_size: int  # the new db's bytes: the appended pages are base.db_size..db_size
    meta_page: bytes  # the new transaction's, written at base.meta_offset
    appended_sha256: bytes

    @property
    def txid(self) -> int:
        return self.base.txid + 1

    def to_json(self) -> bytes:
        return json.dumps({"base": self.base._fields(), "db_size": self.db_size,
                           "meta_page": base64.b64encode(self.meta_page).decode(),
                           "appended_sha256": self.appended_sha256.hex()}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Replayed:
        """SnapshotFormatError unless ``data`` is what :meth:`to_json` wrote."""
        return _parsed(data, "replay", lambda raw: cls._of(raw))

    @classmethod
    def _of(cls, raw: Any) -> Replayed:
        found = cls(Overwritten._of(raw["base"]), int(raw["db_size"]),
                    base64.b64decode(raw["meta_page"], validate=True), bytes.fromhex(raw["appended_sha256"]))
        if (len(found.appended_sha256) != TRAILER_SIZE or len(found.base.trailer) != TRAILER_SIZE
                or len(found.meta_page) != len(found.base.meta_page) or found.db_size <= found.base.db_size):
            raise ValueError("inconsistent")
        return found


def commit_member_db(snapshot: Path, changes: Sequence[BucketChanges], *,
                     record: Callable[[Overwritten], None], replayed: Replayed | None = None) -> WrittenDb:
    """Turn the etcd snapshot file ``snapshot`` into a member's db (no trailer) with ``changes``
    committed into it: nothing is copied.

    For a snapshot this process fetched and checked, or one :func:`commit_in_place` replayed
    into and kept ``replayed`` of. ``record`` is given what the commit overwrites (the older
    meta page and the trailer, if any) before anything is written, to keep it durably: with it
    the snapshot's own bytes stay provable (:func:`snapshot_sha256`, :func:`replayed_difference`).
    Order, as bbolt commits: the new pages after the high-water mark (over the trailer), fsynced;
    the snapshot's bytes below the mark hashed meanwhile, which must still match its trailer (or
    the base's trailer and the replay's record) (no page of the snapshot was written over: what
    the new tree keeps of the old one is the snapshot's); then the new meta, one txid later, over
    the older meta page, fsynced. Until that last write the file's newest meta is the snapshot's.
    """
    snapshot = Path(snapshot)
    edits = _all_edits(changes)
    with BoltFile.open(snapshot) as db:
        if replayed is None and not db.has_trailer:
            raise UsageError(f"{snapshot} has no sha256 trailer; only a checked snapshot is committed into")
        if replayed is not None and (db.has_trailer or db.meta.txid != replayed.txid or db.db_size != replayed.db_size):
            raise IntegrityError(f"{snapshot} is not the replayed db its record describes (transaction {db.meta.txid}, "
                                 f"{db.db_size} bytes; the record names {replayed.txid}, {replayed.db_size}); "
                                 "fetch it again")
        buckets, put_bytes = _checked_buckets(db, edits, changes)
        _require_free_space(snapshot, 2 * put_bytes)
        offset = _spare_meta(db) * db.page_size
        before = _overwritten(db, offset)
        record(before)
        try:
            with snapshot.open("r+b") as out:
                sink, txid, db_size, meta = _new_pages(db, out, changes, edits, buckets)
                out.truncate(db_size)
                out.flush()
                # Mostly the fetched pages go to the disk, while the snapshot's are hashed.
                if replayed is None:
                    kept = _synced_meanwhile(out, lambda: snapshot_sha256(snapshot, before)) == before.trailer.hex()
                    if not kept:
                        raise IntegrityError(f"{snapshot}: the snapshot's pages changed while lifeboat committed into "
                                             "it (their sha256 no longer matches its trailer); fetch it again")
                else:
                    difference = _synced_meanwhile(out, lambda: replayed_difference(snapshot, replayed, before))
                    if difference is not None:
                        raise IntegrityError(f"{snapshot}: {difference}, found as lifeboat committed into it; "
                                             "fetch it again")
                _write_meta(out, offset, meta)
        except OSError as exc:  # raised here, not as a read fault of the source
            raise _write_failure(snapshot, exc) from exc
        return WrittenDb(snapshot, db.page_size, sink.next_pgid, txid, sink.pages_written, db_size, db_size,
                         False, None)


def _overwritten(db: BoltFile, meta_offset: int) -> Overwritten:
    """What a commit into ``db`` overwrites: the meta page at ``meta_offset`` and the trailer, if any."""
    return Overwritten(db.meta.txid, db.db_size, meta_offset, bytes(db.mm[meta_offset : meta_offset + db.page_size]),
                       _trailer(db))


def _trailer(db: BoltFile) -> bytes:
    return bytes(db.mm[db.db_size : db.db_size + TRAILER_SIZE]) if db.has_trailer else b""


def replayed_difference(path: Path, replayed: Replayed, committed: Overwritten | None = None) -> str | None:
    """None when ``path``, a db :func:`commit_in_place` replayed into and kept ``replayed`` of,
    still holds exactly the bytes it checked and wrote; else what differs. ``committed``: what a
    later :func:`commit_member_db` into it overwrote, put back first.

    One read of the file: the base's bytes (its overwritten meta page put back, as
    :func:`snapshot_sha256` does) against the base's trailer, and at the same time, in a thread
    (the two sha256 are independent, and hashlib releases the GIL), the appended ones against
    the replay's sha256 of them.
    """
    base = replayed.base
    first = hashlib.sha256()
    buffer = bytearray(min(_HASH_CHUNK, base.db_size))
    with (Path(path).open("rb", buffering=0) as source, memoryview(buffer) as view,
          ThreadPoolExecutor(1, thread_name_prefix="lifeboat-hash") as pool):
        if os.fstat(source.fileno()).st_size < replayed.db_size:
            return "the replayed db is shorter than the replay wrote it"
        head = view[:read_exactly(source, view)]  # holds both meta pages (at most 2 MiB)
        if committed is not None:
            head[committed.meta_offset : committed.meta_offset + len(committed.meta_page)] = committed.meta_page
        if head[base.meta_offset : base.meta_offset + len(replayed.meta_page)] != replayed.meta_page:
            return "the replay's meta page is not the one it wrote"
        rest = pool.submit(_range_sha256, Path(path), base.db_size, replayed.db_size)
        head[base.meta_offset : base.meta_offset + len(base.meta_page)] = base.meta_page
        first.update(head)
        hash_range(first, source, len(head), base.db_size, view)
        appended = bytes.fromhex(finished(rest))  # waited for here, not by the pool's untimed join
    if first.digest() != base.trailer:
        return "the base snapshot's pages no longer match its sha256 trailer"
    if appended != replayed.appended_sha256:
        return "the replayed pages no longer match the sha256 the replay recorded of them"
    return None


def _range_sha256(path: Path, start: int, end: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as source, memoryview(bytearray(min(_HASH_CHUNK, max(end - start, 1)))) as view:
        hash_range(digest, source, start, end, view)
    return digest.hexdigest()


def snapshot_sha256(path: Path, before: Overwritten) -> str:
    """The sha256 of the snapshot's db bytes in ``path``, a file :func:`commit_member_db` committed
    into (or began to): its bytes below the snapshot's size with the overwritten meta page put
    back. It is the snapshot's trailer unless a page of the snapshot was written over."""
    digest = hashlib.sha256()
    buffer = bytearray(min(_HASH_CHUNK, before.db_size))
    with Path(path).open("rb", buffering=0) as source, memoryview(buffer) as view:
        head = view[:read_exactly(source, view)]  # holds both meta pages (at most 2 MiB)
        head[before.meta_offset : before.meta_offset + len(before.meta_page)] = before.meta_page
        digest.update(head)
        hash_range(digest, source, len(head), before.db_size, view)
    return digest.hexdigest()


def _new_pages(db: BoltFile, out: BinaryIO, changes: Sequence[BucketChanges], edits: Mapping[bytes, Edits],
               buckets: Mapping[bytes, tuple[BucketRef, int]]) -> tuple[PageSink, int, int, bytes]:
    """Write the changed pages after the high-water mark: the sink, the new txid, the new db's
    size and its meta page (not written)."""
    with PageSink(out, db.page_size, db.meta.high_water) as sink:
        new_root = _rewrite(db, sink, changes, edits, buckets)
        sink.flush()
    txid = db.meta.txid + 1
    return sink, txid, sink.next_pgid * db.page_size, _meta_page(db, new_root, sink.next_pgid, txid)


def _rewrite(
    db: BoltFile,
    sink: PageSink,
    changes: Sequence[BucketChanges],
    edits: Mapping[bytes, Edits],
    buckets: Mapping[bytes, tuple[BucketRef, int]],
) -> int:
    """Write the changed pages of every bucket and of the root bucket; the new root's id."""
    rewrite = TreeRewrite(db, sink, str(db.path))
    roots: dict[bytes, Item | None] = {}
    for change in changes:
        ref, sequence = buckets[change.bucket]
        root = _rewrite_bucket(db, rewrite, ref, edits[change.bucket], change.appends)
        roots[change.bucket] = (BUCKET_LEAF_FLAG, change.bucket, BUCKET_HEADER.pack(root, sequence))
    return rewrite.tree(db.meta.root, Edits.of(roots), None)


def _complete(
    db: BoltFile, out: BinaryIO, tmp: Path, meta: bytes, meta_offset: int, db_size: int, hashed: bool,
    check_source: bool,
) -> str | None:
    """Copy the source's pages under the new ones, then the meta page; the new db's sha256.

    The sha256 is only computed when ``hashed`` (for the trailer); None otherwise.
    The copy, the check of the source's trailer and the hash of the new db run at once (the
    two hashes are most of the time on a large db, and hashlib releases the GIL). The hash
    reads the source's pages with the new meta in place, so it need not wait for the copy.
    Without ``check_source`` (a source this process checked before) the hash's reads feed the
    source's own sha256 too, which must still match its trailer.
    """
    out.flush()
    with ThreadPoolExecutor(2, thread_name_prefix="lifeboat-writer") as pool:
        trailer = pool.submit(check_trailer, db.path) if check_source else None
        # A source checked before (fetched and verified by this process) is checked again in the
        # pass that hashes the new db, from the same reads: a byte changed on disk since is refused.
        source = hashlib.sha256() if hashed and not check_source and _as_fetched(db) else None
        digest = pool.submit(_new_db_sha256, db, tmp, meta, meta_offset, db_size, source) if hashed else None
        _copy_pages(db, out)
        out.seek(meta_offset)
        out.write(meta)
        if trailer is not None:
            finished(trailer).require_match(db.path)
        new = None if digest is None else finished(digest)
        if source is not None and source.digest() != _trailer(db):
            raise _changed_since_fetch(db.path, "nothing was written from it")
        return new


def _new_db_sha256(db: BoltFile, tmp: Path, meta: bytes, meta_offset: int, db_size: int,
                   source_digest: Any = None) -> str:
    """The new db's sha256: ``db``'s pages with ``meta`` at ``meta_offset``, then ``tmp``'s above
    them. ``source_digest``, if given, is fed ``db``'s own bytes (its meta pages as they are) in
    the same reads: the commit into ``db`` itself (``tmp`` is ``db``'s file) checks them with it."""
    digest = hashlib.sha256()
    both = _Both(digest, source_digest) if source_digest is not None else digest
    copied = db.meta.tx_size
    # One buffer read into again and again: a fresh read per chunk is a fresh mapping whose
    # every page faults when written (about 360,000 faults for a 1.5 GB db).
    buffer = bytearray(min(_HASH_CHUNK, max(db_size, 1)))
    with db.path.open("rb", buffering=0) as source, memoryview(buffer) as view:
        head = view[:read_exactly(source, view[:min(_HASH_CHUNK, copied)])]
        if source_digest is not None:
            source_digest.update(head)
        head[meta_offset : meta_offset + len(meta)] = meta
        digest.update(head)
        hash_range(both, source, len(head), copied, view)
    with tmp.open("rb", buffering=0) as written, memoryview(buffer) as view:
        hash_range(digest, written, copied, db_size, view)
    return digest.hexdigest()


class _Both:
    """Two sha256 digests fed the same bytes."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def update(self, data: memoryview) -> None:
        self.first.update(data)
        self.second.update(data)


def _changed_since_fetch(snapshot: Path, consequence: str) -> IntegrityError:
    return IntegrityError(f"{snapshot}: the snapshot's pages changed since it was fetched and checked (their "
                          f"sha256 no longer matches its trailer); {consequence}; fetch it again")


def _as_fetched(db: BoltFile) -> bool:
    """Whether ``db``'s file is still a snapshot as fetched: its trailer right after its tree's
    last page. After a commit into it was interrupted (before its meta), new pages, and perhaps
    their trailer, follow the tree instead: the snapshot's trailer is gone, nothing to check."""
    return db.has_trailer and db.db_size == db.meta.tx_size


def bump_revision(source: Path, dest: Path, amount: int, *, trailer: bool = True) -> BumpResult:
    """Write ``dest``: ``source`` with its revision raised by ``amount`` and compacted there.

    What etcd's ``snapshot restore --bump-revision N --mark-compacted`` (3.5.10+, 3.4.27+)
    does to the db (etcdutl/snapshot/v3_snapshot.go): one row in bucket ``key`` at
    (latest main revision + N, sub 0) with an empty value, and ``scheduledCompactRev`` in
    bucket ``meta`` set to that revision, so etcd finishes the compaction when it starts.
    """
    source = Path(source)
    with BoltFile.open(source) as db:
        latest, changes = bump_changes(db, amount)
    written = write_db(source, dest, changes, trailer=trailer)
    return BumpResult(old_revision=latest, new_revision=latest + amount, written=written)


def bump_changes(db: BoltFile, amount: int) -> tuple[int, list[BucketChanges]]:
    """The source's latest main revision, and the changes that bump it by ``amount``."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise UsageError(f"the revision bump must be a positive number of revisions, not {amount!r}")
    buckets = _top_level_buckets(db)
    for name in (KEY_BUCKET, META_BUCKET):
        if name not in buckets:
            raise SnapshotFormatError(f"{db.path}: has no bucket {name.decode()!r}; it is not an etcd snapshot")
    last = db.last_key(buckets[KEY_BUCKET][0])
    try:
        latest = 0 if last is None else decode_revision(last)[0]
    except MalformedValue as exc:
        raise db.corrupted(f"the last row of bucket 'key' is not a revision ({exc})") from exc
    if latest + amount > MAX_REVISION:
        raise UsageError(
            f"bumping revision {latest} by {amount} passes etcd's largest revision "
            f"{MAX_REVISION}; choose a smaller --bump-revision"
        )
    row = encode_revision(latest + amount, 0)
    return latest, [
        BucketChanges(KEY_BUCKET, appends=[(row, b"")]),
        BucketChanges(META_BUCKET, puts={SCHEDULED_COMPACT_KEY: row}),
    ]


def bump_restored_db(db: Path, amount: int) -> BumpResult:
    """Bump the db of a freshly restored member (``member/snap/db``) in place.

    This is lifeboat's own staging output, so it is changed the way bbolt commits a
    transaction (db.go, tx.go): the new pages go after the high-water mark and are fsynced,
    then the new meta (one txid later) replaces the older of the two meta pages and is
    fsynced. A crash before the meta leaves the db as it was; a torn meta fails its checksum
    and bbolt uses the other one. The result is checked structurally, and the meta put back
    if the check fails. A ``db`` already bumped (a repeated call) is left as it is.

    The check re-reads the keys of the leaves the bump wrote, not of those below the old
    high-water mark: they are the restore tool's, untouched, and the restore has just compared
    bucket ``key`` with the snapshot's (a drill checks the etcd serving it). Every page is
    still accounted for.

    etcd's restore tool bumps after its restore too: etcdctl 3.4's restore opens the MVCC
    store, which would run a compaction scheduled in its input at once.
    """
    db = Path(db)
    if has_trailer_length(db.stat().st_size):
        raise UsageError(f"{db} is a snapshot file (it has etcd's sha256 trailer), not a member's "
                         "db; write a bumped copy of it with bump_revision instead")
    done = _already_bumped(db, amount)
    if done is not None:
        return done
    with BoltFile.open(db) as bolt:
        latest, changes = bump_changes(bolt, amount)
        edits = {change.bucket: _bucket_edits(change) for change in changes}
        offset = _spare_meta(bolt) * bolt.page_size
        untouched = bolt.meta.high_water
        previous = bytes(bolt.mm[offset : offset + bolt.page_size])
        try:
            with db.open("r+b") as out:
                written = _commit_in_place(bolt, out, changes, edits)
        except OSError as exc:  # raised here, not as a read fault of the source
            raise _write_failure(db, exc) from exc
    check = check_snapshot(db, reread_from=untouched)
    if not check.ok:
        try:
            with db.open("r+b") as out:
                out.seek(offset)
                out.write(previous)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise _write_failure(db, exc) from exc
        check.require_ok()
    return BumpResult(latest, latest + amount, written)


def _commit_in_place(
    bolt: BoltFile, out: BinaryIO, changes: Sequence[BucketChanges], edits: Mapping[bytes, Edits]
) -> WrittenDb:
    with PageSink(out, bolt.page_size, bolt.meta.high_water) as sink:
        new_root = _rewrite(bolt, sink, changes, edits, _top_level_buckets(bolt))
        sink.flush()
    out.flush()
    os.fsync(out.fileno())
    txid = bolt.meta.txid + 1
    _write_meta(out, _spare_meta(bolt) * bolt.page_size, _meta_page(bolt, new_root, sink.next_pgid, txid))
    size = os.fstat(out.fileno()).st_size
    return WrittenDb(bolt.path, bolt.page_size, sink.next_pgid, txid, sink.pages_written,
                     sink.next_pgid * bolt.page_size, size, False, None)


def _already_bumped(db: Path, amount: int) -> BumpResult | None:
    """The bump of an earlier, interrupted call, if ``db`` carries it."""
    with BoltFile.open(db) as bolt:
        buckets = _top_level_buckets(bolt)
        if KEY_BUCKET not in buckets:
            return None
        last = bolt.last_key(buckets[KEY_BUCKET][0])
    if last is None or len(last) != 17:
        return None
    marks = read_meta(db)
    latest = decode_revision(last)[0]
    # etcd records finishedCompactRev once it has compacted: a db of a cluster that was bumped
    # and has not been written since has both marks at its last revision, and needs a bump.
    if (marks.scheduled_compact_revision != latest or marks.finished_compact_revision == latest
            or latest - amount < 0):
        return None
    size = db.stat().st_size
    return BumpResult(latest - amount, latest, WrittenDb(db, 0, 0, 0, 0, size, size, False, None))


# -- changes ---------------------------------------------------------------------------------


def _all_edits(changes: Sequence[BucketChanges]) -> dict[bytes, Edits]:
    edits = {change.bucket: _bucket_edits(change) for change in changes}
    if len(edits) != len(changes):
        raise UsageError("changes name the same bucket twice; give one BucketChanges per bucket")
    return edits


def _checked_buckets(db: BoltFile, edits: Mapping[bytes, Edits], changes: Sequence[BucketChanges],
                     ) -> tuple[dict[bytes, tuple[BucketRef, int]], int]:
    """The top-level buckets (each edited one must exist), and the bytes the puts add."""
    buckets = _top_level_buckets(db)
    for name in edits:
        if name not in buckets:
            raise UsageError(f"{db.path}: has no bucket {name!r}; the writer does not create buckets")
    return buckets, sum(len(k) + len(v) for c in changes for k, v in c.puts.items())


def _bucket_edits(change: BucketChanges) -> Edits:
    if not isinstance(change.bucket, bytes) or not change.bucket:
        raise UsageError(f"a bucket name must be non-empty bytes, not {change.bucket!r}")
    both = set(change.puts) & change.deletes
    if both:
        raise UsageError(
            f"bucket {change.bucket!r}: key {min(both)!r} is both put and deleted; give one"
        )
    elements: dict[bytes, Item | None] = {}
    for key, value in change.puts.items():
        _check_row(change.bucket, key, value)
        elements[key] = (0, key, value)
    for key in change.deletes:
        _check_row(change.bucket, key, b"")
        elements[key] = None
    return Edits.of(elements)


def _check_row(bucket: bytes, key: object, value: object) -> None:
    if not isinstance(key, bytes) or not isinstance(value, bytes):
        raise UsageError(f"bucket {bucket!r}: keys and values must be bytes")
    if not 0 < len(key) <= MAX_KEY_SIZE:
        raise UsageError(f"bucket {bucket!r}: key {key!r:.80} is empty or longer than bbolt allows")


def _top_level_buckets(db: BoltFile) -> dict[bytes, tuple[BucketRef, int]]:
    """Each top-level bucket: where its pages are, and its sequence number."""
    found = {}
    for name, value, buf, start, end in db.items(BucketRef(db.meta.root), db.new_seen()):
        if value is not None:
            raise db.corrupted(f"top-level key {name!r} is not a bucket")
        _root, sequence = BUCKET_HEADER.unpack(buf[start : start + BUCKET_HEADER.size])
        found[name] = (db.bucket_ref(buf, start, end), sequence)
    return found


def _rewrite_bucket(
    db: BoltFile,
    rewrite: TreeRewrite,
    ref: BucketRef,
    edits: Edits,
    appends: Iterable[tuple[bytes, bytes]],
) -> int:
    """Apply one bucket's changes; the page id of its new root."""
    if ref.inline is not None:
        # A changed inline bucket is written as pages: valid for every bbolt reader, and
        # bbolt folds it back inline itself when a later transaction leaves it small.
        return rewrite.items(db.leaf_items(db.inline_leaf(ref.inline)), edits, appends)
    return rewrite.tree(ref.root, edits, appends)


# -- file ------------------------------------------------------------------------------------


def _write_meta(out: BinaryIO, offset: int, meta: bytes) -> None:
    """Write the meta page that commits a transaction, and fsync: the last write of a commit."""
    out.seek(offset)
    out.write(meta)
    out.flush()
    os.fsync(out.fileno())


def _spare_meta(db: BoltFile) -> int:
    """The meta page (0 or 1) a new transaction writes: the one the reader does not use. bbolt's
    commits alternate by txid, but a snapshot etcd streamed (bbolt ``Tx.WriteTo``) has its txid
    on page 0 and txid - 1 on page 1, whatever the parity."""
    return 1 - db.meta.page_id


def _meta_page(db: BoltFile, root: int, high_water: int, txid: int) -> bytes:
    meta = db.meta
    fields = (MAGIC, VERSION, db.page_size, meta.flags, root, meta.root_sequence)
    body = META.pack(*fields, NO_FREELIST, high_water, txid, 0)[:META_CHECKSUMMED]
    page = PAGE_HEADER.pack(_spare_meta(db), META_PAGE, 0, 0) + body + fnv64a(body).to_bytes(8, "little")
    return page.ljust(db.page_size, b"\0")


def _copy_pages(db: BoltFile, out: BinaryIO) -> None:
    """Copy the source's pages below its high-water mark, in the kernel where possible."""
    size = db.meta.tx_size
    with db.path.open("rb") as src:
        copied = 0
        try:
            while copied < size:
                done = os.copy_file_range(
                    src.fileno(), out.fileno(), min(_COPY_CHUNK, size - copied), copied, copied
                )
                if done == 0:
                    raise SnapshotFormatError(f"{db.path}: shrank while it was being copied")
                copied += done
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            src.seek(copied)
            out.seek(copied)
            while copied < size:
                chunk = src.read(min(_COPY_CHUNK, size - copied))
                if not chunk:
                    raise SnapshotFormatError(f"{db.path}: shrank while it was being copied") from None
                out.write(chunk)
                copied += len(chunk)


def _refuse_same_file(source: Path, dest: Path) -> None:
    if source.resolve() == dest.resolve() or (
        dest.exists() and source.exists() and os.path.samefile(source, dest)
    ):
        raise UsageError(f"{dest}: the new db must not replace its source; name another file")


def _require_free_space(dest: Path, needed: int) -> None:
    parent = dest.parent
    try:
        free = shutil.disk_usage(parent).free
    except FileNotFoundError as exc:
        raise UsageError(f"{parent}: directory does not exist; create it first") from exc
    # Room for a few dozen new pages and the meta beyond what the caller told us about.
    needed += 1 << 20
    if free < needed:
        raise NoRoom(  # exit 5, as every need said before anything is written
            f"not enough disk space in {parent}: writing {dest.name} needs about "
            f"{needed >> 20} MiB, {free >> 20} MiB are free; free some space or write elsewhere"
        )


class _replacing:
    """A temporary file beside ``dest``, renamed over it only if the block succeeds."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.tmp = dest.with_name(f".{dest.name}.{os.getpid()}.lifeboat-tmp")

    def __enter__(self) -> tuple[Path, BinaryIO]:
        try:
            fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise OperationFailed(f"cannot create {self.tmp}: {exc.strerror or exc}") from exc
        self.out = os.fdopen(fd, "w+b")
        return self.tmp, self.out

    def __exit__(self, kind: object, exc: BaseException | None, _tb: object) -> None:
        try:
            if exc is None:
                self.out.flush()
                os.fsync(self.out.fileno())
            self.out.close()
            if exc is None:
                os.replace(self.tmp, self.dest)
                fsync_dir(self.dest.parent)
        except OSError as error:
            self.tmp.unlink(missing_ok=True)
            raise _write_failure(self.dest, error) from error
        finally:
            if exc is not None:
                self.tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_failure(self.dest, exc) from exc


def _write_failure(dest: Path, error: OSError) -> OperationFailed:
    if error.errno == errno.ENOSPC:
        return OperationFailed(f"disk full while writing {dest}; free some space or write elsewhere")
    return OperationFailed(f"cannot write {dest}: {error.strerror or error}")

