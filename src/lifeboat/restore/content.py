"""Offline checks that a restored data dir holds the snapshot's keyspace.

``etcdutl snapshot restore`` copies the snapshot's db and rewrites only membership and
consistent-index metadata (buckets ``members``, ``cluster``, ``meta``), so a whole-file
hash cannot match. The MVCC history in bucket ``key`` is carried over row for row;
``--bump-revision`` only adds rows above the snapshot's revision. So the sound comparison
is a digest of bucket ``key`` up to the snapshot's revision, on both files.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import logging
import os
import pickle
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from lifeboat.durable import replace_durably
from lifeboat.errors import IntegrityError, OperationFailed
from lifeboat.snapshot import KeyValue
from lifeboat.snapshot.mvcc import decode_key_value, latest_rows, note_latest_rows
from lifeboat.snapshot.bbolt import LEAF_PAGE, BoltFile, Buffer
from lifeboat.waits import finished, lifeboat_child

_KEY_BUCKET = b"key"
_MAIN = struct.Struct(">Q")
_LENGTH = struct.Struct(">II")
_COMPARED_BLOCK = 4 << 20


@dataclass(frozen=True)
class KeyspaceDigest:
    """sha256 over every (revision key, KeyValue) row of bucket ``key`` up to a revision."""

    rows: int
    last_revision: int
    sha256: str


def keyspace_digest(path: str | os.PathLike[str], up_to_revision: int | None = None, *,
                    txid: int | None = None) -> KeyspaceDigest:
    """Digest bucket ``key`` of the db at ``path`` (of transaction ``txid``'s tree, if given),
    stopping after ``up_to_revision``."""
    digest = hashlib.sha256()
    rows = last = 0
    with BoltFile.open(path, txid=txid) as db:
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


def newest_revision(path: str | os.PathLike[str], *, txid: int | None = None) -> int:
    """The main revision of the last row of bucket ``key`` (0 when it is empty), in transaction
    ``txid``'s tree if given."""
    with BoltFile.open(path, txid=txid) as db:
        bucket = db.bucket(_KEY_BUCKET)
        key = db.last_key(bucket) if bucket is not None else None
        if key is None:
            return 0
        if len(key) < _MAIN.size:
            raise db.corrupted("bucket 'key' holds a row that is not an etcd revision")
        main: int = _MAIN.unpack_from(key)[0]
        return main


def keeps_snapshot_pages(snapshot: str | os.PathLike[str], restored: str | os.PathLike[str]) -> bool:
    """True when the restored db's bucket ``key`` is the snapshot's own pages, byte for byte.

    ``etcdutl snapshot restore`` (3.5) starts from a copy of the snapshot's db and rewrites
    only membership and the consistent index; bbolt never writes a page the committed tree
    still references (copy-on-write), so unless a bump added a row the pages of bucket
    ``key`` are untouched. Then the same root page, reached page by page with nothing that
    differs from the snapshot, holds the same rows: no row needs to be read. False says
    only that the cheap comparison does not apply (compare the rows instead).
    """
    with BoltFile.open(snapshot) as before, BoltFile.open(restored) as after:
        old, new = before.bucket(_KEY_BUCKET), after.bucket(_KEY_BUCKET)
        if old is None or new is None or old != new:
            return False
        if new.inline is not None:
            return True  # the inline bucket's rows are its value, compared with the bucket reference
        changed = _changed_pages(before, after)
        seen = after.new_seen()
        pending = [new.root]
        while pending:
            pgid = pending.pop()
            if pgid >= before.meta.high_water:
                return False
            flags, count, overflow = after.page_header(pgid, seen)
            if any(page in changed for page in range(pgid, pgid + overflow + 1)):
                return False
            if flags != LEAF_PAGE:
                offset = pgid * after.page_size
                pending.extend(after.branch_children(pgid, offset, count))
        return True


def keeps_snapshot_rows(snapshot: str | os.PathLike[str], restored: str | os.PathLike[str], revision: int) -> bool:
    """True when the restored db's bucket ``key`` holds the snapshot's rows up to ``revision``,
    read only where the trees differ.

    lifeboat's own restore writes the db copy-on-write (:mod:`lifeboat.snapshot.writer`): the
    snapshot's pages stay byte for byte, and the pages its bump changed (the right edge of
    bucket ``key``) are new ones past the snapshot's high-water mark. So: no page below that
    mark may differ from the snapshot's but the meta pages; then a subtree the restored tree
    keeps (a page below the mark) is the snapshot's own, and only the new pages are read: the
    rows of their leaves, up to ``revision``, must be the rows the snapshot's tree holds outside
    the kept subtrees, in the same places among them. False says only that the cheap comparison
    does not apply (compare every row instead).
    """
    with BoltFile.open(snapshot) as before, BoltFile.open(restored) as after:
        old, new = before.bucket(_KEY_BUCKET), after.bucket(_KEY_BUCKET)
        if old is None or new is None or old.inline is not None or new.inline is not None:
            return False
        mark = before.meta.high_water
        if any(2 <= page < mark for page in _changed_pages(before, after)):
            return False
        return _rows_outside_kept_match(before, after, old.root, new.root, revision) is True


def keeps_committed_rows(path: str | os.PathLike[str], snapshot_txid: int, revision: int) -> bool | None:
    """True when the db at ``path``, committed into its snapshot's own file (transaction
    ``snapshot_txid``'s tree is the snapshot's and still in the file), holds the snapshot's rows
    of bucket ``key`` up to ``revision``, read only where the two trees differ.

    The commit (:func:`lifeboat.snapshot.writer.commit_member_db`) writes new pages only past
    the snapshot's high-water mark and has shown, by its trailer's sha256, that every page
    below is still the snapshot's: so a subtree the new tree keeps (a page below the mark) is
    the snapshot's own, and the rows of the new leaves, up to ``revision``, must be the rows the
    snapshot's tree holds outside the kept subtrees, in the same places among them. None when
    that means reading too many rows (compare digests of both trees instead).
    """
    with BoltFile.open(path, txid=snapshot_txid) as before, BoltFile.open(path) as after:
        old, new = before.bucket(_KEY_BUCKET), after.bucket(_KEY_BUCKET)
        if after.meta.txid != snapshot_txid + 1 or old is None or new is None:
            return False
        if old.inline is not None or new.inline is not None:
            return None  # a bucket of a few rows, in its parent's page: its rows are compared
        return _rows_outside_kept_match(before, after, old.root, new.root, revision)


def _rows_outside_kept_match(before: BoltFile, after: BoltFile, old_root: int, new_root: int,
                             revision: int) -> bool | None:
    """Whether the rows of ``after``'s new leaves (pages past ``before``'s high-water mark) up
    to ``revision`` are ``before``'s rows outside the subtrees ``after`` keeps, in the same
    places among them; None when that means reading too many rows."""
    mark = before.meta.high_water
    restored_runs = _leaf_runs(after, new_root, lambda pgid: pgid < mark, revision)
    if restored_runs is None:
        return None
    kept = {run for run in restored_runs if isinstance(run, int)}
    return _leaf_runs(before, old_root, kept.__contains__, revision) == restored_runs


_Run = int | tuple[tuple[bytes, bytes], ...]
_MOST_ROWS_READ = 100_000  # beyond this the rows are compared by digest, streamed


def _leaf_runs(db: BoltFile, root: int, kept: Callable[[int], bool], revision: int) -> list[_Run] | None:
    """The tree in key order: a kept subtree as its root's page id, the rows (up to ``revision``)
    of the leaves outside kept subtrees merged into runs; None past ``_MOST_ROWS_READ`` rows."""
    runs: list[_Run] = []
    rows: list[tuple[bytes, bytes]] = []
    read = 0
    seen = db.new_seen()
    pending = [root]
    while pending:
        pgid = pending.pop()
        if kept(pgid):
            if rows:
                runs.append(tuple(rows))
                rows = []
            runs.append(pgid)
            continue
        offset, end, flags, count = db.tree_page(pgid, seen)
        if flags != LEAF_PAGE:
            pending.extend(reversed(db.branch_children(pgid, offset, count)))
            continue
        read += count
        if read > _MOST_ROWS_READ:
            return None
        rows += [(key, value) for _flags, key, value in db.leaf_items((db.mm, offset, end, count))
                 if len(key) >= _MAIN.size and _MAIN.unpack_from(key)[0] <= revision]
    if rows:
        runs.append(tuple(rows))
    return runs


def _changed_pages(before: BoltFile, after: BoltFile) -> set[int]:
    """Ids of the pages of ``after`` whose bytes differ from ``before``'s (or that it lacks)."""
    page_size, size = after.page_size, min(before.db_size, after.db_size)
    if before.page_size != page_size:
        return set(range(after.meta.high_water))
    changed = set(range(size // page_size, after.meta.high_water))
    old, new = bytearray(_COMPARED_BLOCK), bytearray(_COMPARED_BLOCK)
    for offset in range(0, size - size % page_size, _COMPARED_BLOCK):
        length = min(_COMPARED_BLOCK, size - size % page_size - offset)
        if length < len(old):
            old, new = bytearray(length), bytearray(length)
        before.mm.read_into(old, offset)
        after.mm.read_into(new, offset)
        if old == new:  # bytearrays compare with memcmp
            continue
        for start in range(0, length, page_size):
            if old[start : start + page_size] != new[start : start + page_size]:
                changed.add((offset + start) // page_size)
    return changed


_log = logging.getLogger(__name__)

# At most this many keys per sampled key are followed through a scan (see _LowestRanked).
_FOLLOWED_PER_SAMPLE = 64


def sample_keys(path: str | os.PathLike[str], count: int = 32) -> list[KeyValue]:
    """Up to ``count`` live keys spread over the keyspace (chosen by a hash of the key), by key.

    Only the chosen keys' values are decoded. Memory stays bounded however many keys the db
    holds: a few thousand keys are followed, not every key (see :class:`_LowestRanked`).
    """
    with BoltFile.open(path) as db:
        return sample_keys_above(db, None, 0, count)


@dataclass(frozen=True)
class Followed:
    """What :func:`sample_keys` follows in a db once it has read all of it: each followed live
    key with where its latest value is in the file (start, end), and the rank bound."""

    bound: bytes | None
    rows: tuple[tuple[bytes, int, int], ...]


def followed_keys(path: str | os.PathLike[str], count: int = 32, *, txid: int | None = None) -> Followed:
    """The keys :func:`sample_keys` follows in ``path`` (the tree of ``txid``, or the newest)."""
    followed = _LowestRanked(count * _FOLLOWED_PER_SAMPLE)
    with latest_rows(path, into=followed, txid=txid) as latest:
        return Followed(followed.bound, tuple((key, start, end) for key, (_, start, end) in latest.items()))


def sample_keys_above(db: BoltFile, below: Followed | None, revision: int, count: int = 32) -> list[KeyValue]:
    """:func:`sample_keys` of the open ``db``, which holds unchanged, at the same places, the
    rows up to ``revision`` of the db that ``below`` was read from (a fetched base that events
    were replayed into): only its rows from ``revision + 1`` on are read (all of them when
    ``below`` is None).

    The same keys as reading the whole file: the followed map is exactly the one a read of
    it has after its rows up to ``revision``, and going on from there reads those rows and
    then the ones after them in order (a few before them again, from the leaf holding the
    first: applied again in order, they leave every key as it was).
    """
    followed = _LowestRanked(count * _FOLLOWED_PER_SAMPLE, None if below is None else below.bound)
    for key, start, end in () if below is None else below.rows:
        dict.__setitem__(followed, key, (db.mm, start, end))
    note_latest_rows(db, followed, from_revision=0 if below is None else revision + 1)
    if len(followed) >= count or followed.bound is None:
        return _chosen(followed, count)
    # Most keys it followed were deleted after it narrowed, while keys above its bound may
    # live: read once more following every key (memory as many as live at once; rare).
    every: dict[bytes, tuple[Buffer, int, int]] = {}
    note_latest_rows(db, every)
    return _chosen(every, count)


def _chosen(latest: dict[bytes, tuple[Buffer, int, int]], count: int) -> list[KeyValue]:
    chosen = heapq.nsmallest(count, latest, key=_rank)
    return [decode_key_value(*latest[key]) for key in sorted(chosen)]


class _LowestRanked(dict[bytes, tuple[Buffer, int, int]]):
    """A :func:`~lifeboat.snapshot.mvcc.latest_rows` map that follows only the lowest-ranked keys.

    While more than ``cap`` followed keys are live, the bound drops to their median rank and
    the upper half is forgotten; keys ranked at or above the bound are not followed. The bound
    only falls, so a key under the final one was under it at each of its rows: its latest
    value, or its deletion, is the file's, as with an unbounded map. The lowest-ranked live
    keys are therefore exact, as long as at least the sample's count of them are left.
    """

    def __init__(self, cap: int, bound: bytes | None = None) -> None:
        super().__init__()
        self.cap = cap
        self.bound = bound

    def __setitem__(self, key: bytes, where: tuple[Buffer, int, int]) -> None:
        if key not in self:  # a followed key is under the bound
            rank = _rank(key)
            if self.bound is not None and rank >= self.bound:
                return
            if len(self) >= self.cap:
                self._narrow()
                if self.bound is not None and rank >= self.bound:
                    return
        super().__setitem__(key, where)

    def _narrow(self) -> None:
        ranks = {key: _rank(key) for key in self}
        self.bound = sorted(ranks.values())[len(ranks) // 2]
        for key, rank in ranks.items():
            if rank >= self.bound:
                del self[key]


class KeySamples:
    """:func:`sample_keys` of a file started early in a thread, for a later step of the same run.

    The restore samples the snapshot while the restore tool (another process, busy with I/O)
    works, so that etcd's start-up, which the sample is checked against, has the CPU to itself.
    A file changed since its sample was started is sampled again.
    """

    def __init__(self) -> None:
        self._started: dict[Path, tuple[tuple[int, int] | None, Future[list[KeyValue]]]] = {}
        self._below: dict[Path, tuple[int, Future[Followed]]] = {}

    def start_below(self, path: Path, revision: int) -> None:
        """Read now, in a child process, the keys :func:`sample_keys` follows in ``path`` as it
        is: a fetched base at ``revision`` that captured events are about to be replayed into.
        The sample started for ``path`` later reads only the rows above ``revision``
        (:func:`sample_keys_above`), which takes the point restore's key sample off the
        restored db's check: a point's db is the base's and more. If the child fails, that
        sample reads the whole file, as without this."""
        if path in self._below or path in self._started:
            return
        with BoltFile.open(path) as db:
            txid = db.meta.txid
        self._below[path] = (revision, _followed_in_child(path, txid))

    def start(self, path: Path) -> None:
        if path in self._started:
            return
        future: Future[list[KeyValue]] = Future()
        revision, below = self._below.pop(path, (0, None))
        # Opened here, before the caller commits into the file and moves it.
        opened = ExitStack()
        try:
            db = opened.enter_context(BoltFile.open(path)) if below is not None else None
        except Exception:
            db = None

        def run() -> None:
            future.set_running_or_notify_cancel()
            try:
                with opened:
                    if db is None:
                        future.set_result(sample_keys(path))
                    else:
                        future.set_result(sample_keys_above(db, _followed_or_none(below), revision))
            except BaseException as exc:  # re-raised by take()
                future.set_exception(exc)

        self._started[path] = (_identity(path), future)
        threading.Thread(target=run, name="lifeboat-sample", daemon=True).start()

    def take(self, path: Path, *, committed: Path | None = None) -> list[KeyValue]:
        """The sample started for ``path`` if the file is unchanged since, else a new one.

        ``committed``: ``path`` was committed into and moved there, its rows up to the snapshot's
        revision shown to be the snapshot's; a sample started before still holds (a bump's row
        holds no key), and a new one is read from there.
        """
        identity, future = self._started.pop(path, (None, None))
        if future is not None and committed is not None:
            try:
                return finished(future)
            except Exception:  # e.g. it opened the file after the move: sampled again below
                return sample_keys(committed)
        if future is not None and identity is not None and identity == _identity(path):
            return finished(future)
        return sample_keys(committed or path)


def _followed_or_none(below: Future[Followed] | None) -> Followed | None:
    """What the child read, or None (read the whole file) when it failed."""
    if below is None:
        return None
    try:
        return finished(below)
    except Exception as exc:
        _log.info("the base's key sample was not read beside the replay (%s); reading the whole db", exc)
        return None


def _followed_in_child(path: Path, txid: int) -> Future[Followed]:
    """:func:`followed_keys` of ``path`` at ``txid``, read by ``python -m lifeboat.restore.sample_child``."""
    found: Future[Followed] = Future()
    try:
        # The child reads the file through a descriptor of it, opened now: the restore may have
        # moved the file (into the data dir) before the child gets to it.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            child = lifeboat_child("lifeboat.restore.sample_child", pass_fds=(fd,))
        finally:
            os.close(fd)
    except OSError as exc:
        found.set_exception(exc)
        return found
    assert child.stdin is not None and child.stdout is not None
    stdin, stdout = child.stdin, child.stdout

    def read() -> None:
        found.set_running_or_notify_cancel()
        try:
            stdin.write(pickle.dumps((f"/proc/self/fd/{fd}", txid)))
            stdin.flush()
            kind, answer = pickle.load(stdout)
            if kind == "result" and isinstance(answer, Followed):
                found.set_result(answer)
            else:
                found.set_exception(OperationFailed(f"the key sample's child process: {answer}"))
        except BaseException as exc:  # it died, or the pipe broke
            found.set_exception(exc)
        finally:
            for pipe in (stdin, stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            child.wait()

    threading.Thread(target=read, name="lifeboat-sample-below", daemon=True).start()
    return found


def save_sample(path: Path, sample: Sequence[KeyValue]) -> None:
    """Keep ``sample`` in ``path`` (owner-only, durably): the check of the started member needs
    only these keys, so the snapshot they came from can go before it runs, resumed or not."""
    rows = [{"key": _text(kv.key), "value": _text(kv.value), "create_revision": kv.create_revision,
             "mod_revision": kv.mod_revision, "version": kv.version, "lease": kv.lease} for kv in sample]
    replace_durably(path, json.dumps(rows).encode())


def load_sample(path: Path) -> list[KeyValue] | None:
    """The sample :func:`save_sample` kept in ``path``; None if there is none."""
    try:
        rows = json.loads(path.read_bytes())
        return [KeyValue(key=base64.b64decode(row["key"], validate=True),
                         value=base64.b64decode(row["value"], validate=True),
                         create_revision=int(row["create_revision"]), mod_revision=int(row["mod_revision"]),
                         version=int(row["version"]), lease=int(row["lease"])) for row in rows]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise IntegrityError(f"the key sample {path} kept for checking the restored member cannot be read "
                             f"({exc}); remove it and re-run to sample the snapshot again") from None


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def _rank(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=8).digest()
