"""Restoring a snapshot into a new member's data dir with lifeboat's own writer, not etcdutl.

It writes what ``etcdutl snapshot restore`` (3.5) or ``etcdctl snapshot restore`` (3.4) writes
(see :mod:`.member_files` for the WAL and the raft snapshot), and the revision bump of
3.5.10+'s ``--bump-revision --mark-compacted``, in one pass over the db:

* ``member/snap/db``: the snapshot's db with bucket ``members`` holding exactly the new
  cluster's members (``membership.TrimMembershipFromBackend`` then ``AddMember`` in 3.5),
  ``members_removed`` emptied, and in bucket ``meta`` the consistent index at the restore's
  raft commit (one conf change per member) and, from 3.5 on, the raft term 1
  (``cindex.UpdateConsistentIndex``). etcdctl 3.4 leaves the old cluster's members in bucket
  ``members`` (3.4 reads membership from the v2 store only); lifeboat writes the new ones there
  too. Written by :func:`lifeboat.snapshot.writer.write_db`: the snapshot's pages copied
  in-kernel, the changed pages after them, the snapshot itself untouched; or, by
  :meth:`NativeRestore.run_in_place`, committed into the fetched snapshot file itself (nothing
  copied), which then moves into the data dir (see :func:`undo_commit` for an interrupted one).
* the WAL segment and the ``.snap`` file, byte for byte what the etcd version's tool writes.

Each member's id and the cluster id are computed as etcd does, so members restored by
lifeboat and by etcdutl with the same flags form one cluster.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lifeboat.durable import fsync_dir, replace_durably
from lifeboat.errors import IntegrityError, OperationFailed, SnapshotFormatError, UsageError
from lifeboat.etcd.binaries import RestoreTool, SnapshotRestore
from lifeboat.etcd.data_dir import WAL_SEGMENT_BYTES
from lifeboat.restore.content import keeps_committed_rows, keyspace_digest, newest_revision
from lifeboat.restore.member_files import (
    WAL_NAME,
    NewCluster,
    new_cluster,
    peer_url,
    snap_file,
    snap_file_name,
    wal_records,
)
from lifeboat.restore.target import parse_initial_cluster
from lifeboat.snapshot.bbolt import BoltFile
from lifeboat.snapshot.mvcc import MEMBERS_BUCKET, MEMBERS_REMOVED_BUCKET, META_BUCKET
from lifeboat.snapshot.trailer import has_trailer_length
from lifeboat.snapshot.writer import (
    BucketChanges, Overwritten, Replayed, bump_changes, commit_member_db, write_db,
)

CONSISTENT_INDEX_KEY = b"consistent_index"
TERM_KEY = b"term"
# The etcd versions whose restored data dir lifeboat writes itself (tested against both).
NATIVE_VERSIONS = ((3, 4), (3, 5))


@dataclass(frozen=True)
class NativeRestore:
    """lifeboat's writer standing in for ``reference`` (the etcdutl/etcdctl found for the
    snapshot): it writes that tool's etcd version's data dir layout."""

    reference: RestoreTool

    @classmethod
    def fits(cls, tool: RestoreTool) -> bool:
        """Whether lifeboat can write the data dir of ``tool``'s etcd version itself."""
        return tool.version_tuple[:2] in NATIVE_VERSIONS

    @property
    def can_bump_revision(self) -> bool:
        return True

    @property
    def copies_key_pages(self) -> bool:
        """Its bump only adds pages after the snapshot's: bucket ``key`` keeps the snapshot's pages."""
        return True

    def describe(self) -> str:
        major, minor, _ = self.reference.version_tuple
        return f"lifeboat's own writer (etcd {major}.{minor}'s data dir, as {self.reference.kind} {self.reference.version} writes it)"

    def check_compatible(self, snapshot_version: str) -> None:
        self.reference.check_compatible(snapshot_version)

    def run(self, restore: SnapshotRestore) -> None:
        write_member_data_dir(restore, conf_state_in_wal=self.reference.version_tuple[:2] >= (3, 5))

    def run_in_place(self, restore: SnapshotRestore) -> Overwritten:
        """:meth:`run`, committing into ``restore.snapshot`` (a checked snapshot file on the data
        dir's filesystem, which moves into it) instead of copying it; what the commit
        overwrote, also kept in :func:`commit_record` until the work dir goes."""
        write_member_data_dir(restore, conf_state_in_wal=self.reference.version_tuple[:2] >= (3, 5),
                              in_place=True)
        return Overwritten.from_json(commit_record(restore.snapshot).read_bytes())

    def commit_into_snapshot(self, restore: SnapshotRestore, revision: int) -> None:
        """:meth:`run_in_place` for a snapshot file the caller owns and reads no more (a drill's),
        checked as a restore checks it: IntegrityError unless the committed db holds the
        snapshot's rows up to ``revision`` (its own) and, with a bump, one row more."""
        before = self.run_in_place(restore)
        difference = committed_keyspace_difference(restore.data_dir / "member" / "snap" / "db", before.txid,
                                                   revision, restore.bump_revision or 0)
        if difference is not None:
            raise IntegrityError(f"the db committed into the snapshot differs from it ({difference}); report this")


def commit_record(snapshot: Path) -> Path:
    """Where a commit into ``snapshot`` keeps what it overwrites, beside it (lifeboat's work dir)."""
    return snapshot.with_name(snapshot.name + ".overwritten")


def replay_record(snapshot: Path) -> Path:
    """Where a replay into ``snapshot`` (:func:`~lifeboat.snapshot.writer.commit_in_place` with a
    record) keeps what it overwrote and the sha256 of what it appended, beside it."""
    return snapshot.with_name(snapshot.name + ".replayed")


def keep_replay_record(snapshot: Path) -> Callable[[Replayed], None]:
    """The ``record`` of a replay into ``snapshot``: kept durably in :func:`replay_record`."""
    return lambda replayed: replace_durably(replay_record(snapshot), replayed.to_json())


def replayed_into(snapshot: Path) -> Replayed | None:
    """The record of the replay into ``snapshot``, if one was kept; IntegrityError when it is
    unreadable, or when there is none and ``snapshot`` has no trailer either (nothing can check it)."""
    record = replay_record(snapshot)
    way_on = ("nothing was restored from it; roll back with 'lifeboat restore --rollback', then run the "
              "restore again to fetch and check the backup afresh")
    try:
        return Replayed.from_json(record.read_bytes())
    except FileNotFoundError:
        if os.path.exists(snapshot) and not has_trailer_length(os.path.getsize(snapshot)):
            raise IntegrityError(f"{snapshot} has neither etcd's sha256 trailer nor the record of the replay "
                                 f"into it ({record.name}), so it cannot be checked; {way_on}") from None
        return None
    except SnapshotFormatError as exc:
        raise IntegrityError(f"{record}: {exc}, so {snapshot} cannot be checked; {way_on}") from None


def undo_commit(snapshot: Path) -> bool:
    """Put ``snapshot`` back as it was if a commit into it began (an interrupted restore); whether one had.

    The older meta page and the trailer (none for a replayed db) kept in :func:`commit_record`
    go back, the pages after the snapshot's go: its bytes are the snapshot's again, and the
    caller checks them (against its trailer, or its :func:`replay_record`) before they are used.
    A restore resumed after the commit is committed again from the snapshot (never bumped
    twice). Repeatable: the record goes last.
    """
    record = commit_record(snapshot)
    try:
        before = Overwritten.from_json(record.read_bytes())
    except FileNotFoundError:
        return False
    with BoltFile.open(snapshot) as db:
        txid = db.meta.txid
    if txid not in (before.txid, before.txid + 1):
        raise IntegrityError(f"{snapshot} is neither the fetched snapshot nor lifeboat's commit into it "
                             f"(transaction {txid}, {record} names {before.txid}); roll back, remove "
                             f"{snapshot.parent} and restore again")
    try:
        with snapshot.open("r+b") as out:
            out.seek(before.meta_offset)
            out.write(before.meta_page)
            out.truncate(before.db_size)
            out.seek(before.db_size)
            out.write(before.trailer)
            out.flush()
            os.fsync(out.fileno())
        record.unlink()
        fsync_dir(record.parent)
    except OSError as exc:
        raise OperationFailed(f"cannot put the fetched snapshot {snapshot} back as it was: "
                              f"{exc.strerror or exc}") from None
    return True


def committed_keyspace_difference(db: Path, snapshot_txid: int, revision: int, bump: int) -> str | None:
    """None when ``db``, committed into its snapshot's file, holds the rows the snapshot's tree
    (transaction ``snapshot_txid``, still in the file) holds up to ``revision`` and (with a
    ``bump``) one more at ``revision + bump``; else what differs."""
    same = keeps_committed_rows(db, snapshot_txid, revision)
    if same is None:
        same = keyspace_digest(db, revision) == keyspace_digest(db, revision, txid=snapshot_txid)
    newest, bumped = newest_revision(db, txid=snapshot_txid), newest_revision(db)
    if same and newest == revision and bumped == revision + bump:
        return None
    return (f"rows {'equal' if same else 'differ'}, the snapshot's to revision {newest}, the restored db's "
            f"to {bumped}")


def write_member_data_dir(restore: SnapshotRestore, *, conf_state_in_wal: bool, in_place: bool = False) -> NewCluster:
    """Write ``restore.data_dir`` (which must not exist) from ``restore.snapshot``; the new cluster.

    ``conf_state_in_wal`` selects etcd 3.5's layout (the WAL's snapshot record carries the
    conf state, bucket ``meta`` the raft term) over 3.4's. ``in_place``: the db is committed into
    ``restore.snapshot`` itself (:func:`~lifeboat.snapshot.writer.commit_member_db`, what it
    overwrites kept in :func:`commit_record` first), which is then renamed into the data dir;
    after a replay into it, checked against :func:`replayed_into`'s record, not a trailer.
    """
    data_dir = restore.data_dir
    if os.path.lexists(data_dir):
        raise UsageError(f"restore target {data_dir} already exists; move it aside first")
    urls = restore.advertise_peer_urls
    members = parse_initial_cluster(restore.initial_cluster)
    cluster = new_cluster([(m.name, m.peer_urls) for m in members], restore.token)
    node = cluster.member(restore.name)
    advertised = urls.split(",") if isinstance(urls, str) else list(urls)
    if sorted(peer_url(u) for u in advertised if u.strip()) != list(node.peer_urls):
        raise UsageError(f"--initial-advertise-peer-urls {','.join(advertised)} differs from what "
                         f"--initial-cluster lists for {node.name}; make them the same")
    snap_dir, wal_dir = data_dir / "member" / "snap", data_dir / "member" / "wal"
    replayed = replayed_into(restore.snapshot) if in_place else None
    with BoltFile.open(restore.snapshot) as db:
        changes = _db_changes(db, cluster, restore.bump_revision, with_term=conf_state_in_wal)
    data_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # as the tools do
    for directory in (data_dir, data_dir / "member", snap_dir, wal_dir):
        directory.mkdir(mode=0o700)
    if in_place:
        commit_member_db(restore.snapshot, changes, replayed=replayed,
                         record=lambda before: replace_durably(commit_record(restore.snapshot), before.to_json()))
        os.rename(restore.snapshot, snap_dir / "db")
        fsync_dir(restore.snapshot.parent)
    else:
        write_db(restore.snapshot, snap_dir / "db", changes, trailer=False, source_checked=restore.skip_hash_check)
    _write_file(wal_dir / WAL_NAME, wal_records(cluster, node, conf_state_in_snapshot=conf_state_in_wal),
                mode=0o600, size=WAL_SEGMENT_BYTES)
    _write_file(snap_dir / snap_file_name(cluster), snap_file(cluster), mode=0o644)
    for directory in (snap_dir, wal_dir, data_dir / "member", data_dir):
        fsync_dir(directory)
    return cluster


def _db_changes(db: BoltFile, cluster: NewCluster, bump: int | None, *, with_term: bool) -> list[BucketChanges]:
    index = cluster.commit.to_bytes(8, "big")
    meta: dict[bytes, bytes] = {CONSISTENT_INDEX_KEY: index}
    if with_term:
        meta[TERM_KEY] = (1).to_bytes(8, "big")
    changes: list[BucketChanges] = []
    if bump:
        _latest, bumped = bump_changes(db, bump)
        for change in bumped:
            if change.bucket == META_BUCKET:
                meta.update(change.puts)
            else:
                changes.append(change)
    changes.append(BucketChanges(META_BUCKET, puts=meta))
    members = {m.key: m.json() for m in cluster.members}
    old = _keys(db, MEMBERS_BUCKET)
    if old is None:
        raise OperationFailed(f"{db.path} has no bucket 'members'; restore it with --restore-with tool")
    changes.append(BucketChanges(MEMBERS_BUCKET, puts=members, deletes=frozenset(old - members.keys())))
    removed = _keys(db, MEMBERS_REMOVED_BUCKET)
    if removed:
        changes.append(BucketChanges(MEMBERS_REMOVED_BUCKET, deletes=frozenset(removed)))
    return changes


def _keys(db: BoltFile, bucket: bytes) -> set[bytes] | None:
    ref = db.bucket(bucket)
    if ref is None:
        return None
    return {key for key, _value, _buf, _start, _end in db.items(ref, db.new_seen())}


def _write_file(path: Path, data: bytes, *, mode: int, size: int = 0) -> None:
    """Write ``data`` to the new file ``path``, preallocated to ``size`` bytes (zeros), and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        if size:
            os.posix_fallocate(fd, 0, size)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def native_or(tool: RestoreTool, *, choice: str | None) -> RestoreTool | NativeRestore:
    """The restore tool to use: lifeboat's writer for ``tool``'s etcd version unless ``choice`` is
    "tool" (or lifeboat cannot write that version's layout and ``choice`` is not "lifeboat")."""
    if choice == "tool":
        return tool
    if NativeRestore.fits(tool):
        return NativeRestore(tool)
    if choice == "lifeboat":
        raise UsageError(f"lifeboat writes the data dir of etcd 3.4 and 3.5 only, not of {tool.describe()}; "
                         "use --restore-with tool")
    return tool

