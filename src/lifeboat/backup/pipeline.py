"""Taking a backup: snapshot one member, check it, compress, encrypt, upload, commit.

The stages overlap (see :mod:`lifeboat.catalog.streams`): while etcd streams its snapshot,
the bytes are spooled to a temp file and hashed in one thread, compressed by zstd's worker
threads, encrypted by age in another, and uploaded here. Nothing becomes visible in the
repository until every object is stored and the manifest is written (create-only) last; a
failure at any point removes what was uploaded and leaves no manifest.
"""

from __future__ import annotations

import errno
import hashlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from lifeboat import __version__
from lifeboat.backup.control_plane import capture
from lifeboat.backup.source import SourceChoice, choose_source_member
from lifeboat.catalog.age_keys import Recipient, load_recipients
from lifeboat.catalog.codec import DEFAULT_ZSTD_LEVEL, encode
from lifeboat.catalog.file_archive import CapturedFile
from lifeboat.catalog.ids import check_cluster_name, new_backup_id
from lifeboat.catalog.layout import FILES_OBJECT, SNAPSHOT_OBJECT, stored_name
from lifeboat.catalog.manifest import BackupObject, BackupStatus, Manifest, SnapshotInfo, SourceMember
from lifeboat.catalog.repository import BackupRepository, started_time
from lifeboat.catalog.segments import seen_text
from lifeboat.catalog.timeline import STATE_REVISION
from lifeboat.catalog.streams import Chunk, Digest, PieceBuffers, SnapshotDigest, hashing, private_file, threaded
from lifeboat.config import LifeboatConfig
from lifeboat.errors import IntegrityError, NotFound, OperationFailed
from lifeboat.etcd.seam import ClusterView
from lifeboat.snapshot import PageScan, SnapshotStatus, snapshot_status
from lifeboat.disk import FreeSpace, RoomReport, free_bytes, require_room
from lifeboat.durable import install_durably, part_path
from lifeboat.snapshot.mvcc import read_meta
from lifeboat.snapshot.spool import ROOM_HINT, spool_dir
from lifeboat.waits import finished

_log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
# The snapshot's 1 MiB pieces in flight: queued between the stream's thread and zstd's (the
# pipe's depth, 4), in each one's hands, and one more the stream's thread may hold in a put.
_PIECES = 7


class SnapshotSource(ClusterView, Protocol):
    """The etcd connection as the backup uses it."""

    def snapshot(self, endpoint: str) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class BackupOptions:
    """What the user asked for; validated where it is built (the CLI or the config)."""

    cluster: str
    endpoints: tuple[str, ...]
    recipients: tuple[Recipient, ...] = ()
    zstd_level: int = DEFAULT_ZSTD_LEVEL
    capture_files: bool = True
    root: Path = Path("/")
    tmp_dir: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: LifeboatConfig, endpoints: tuple[str, ...], cluster: str | None = None) -> BackupOptions:
        """The options a (validated) config asks for; ``cluster`` overrides the config's."""
        return cls(
            cluster=cluster or config.cluster, endpoints=endpoints,
            recipients=tuple(load_recipients(list(config.encryption.recipients))),
            zstd_level=config.backup.zstd_level, capture_files=config.backup.capture_files,
            root=config.root, tmp_dir=config.backup.tmp_dir, labels=dict(config.backup.labels),
        )


Progress = Callable[[str, int], None]


def _no_progress(stage: str, done: int) -> None:
    return None


def take_backup(
    etcd: SnapshotSource,
    repo: BackupRepository,
    options: BackupOptions,
    *,
    now: Callable[[], datetime] | None = None,
    progress: Progress = _no_progress,
    inspect: Callable[[Path], object] = lambda snapshot: None,
    free_space: FreeSpace = free_bytes,
    room: RoomReport = lambda need: None,
    committed: Callable[[Manifest], object] = lambda manifest: None,
) -> Manifest:
    """Take one backup and commit it; returns the committed manifest.

    ``committed`` is told the manifest the moment it is written, before anything else can
    interrupt (a SIGTERM from then on no longer undoes the backup).

    ``inspect`` is called with the raw snapshot file once it is complete and checked, while
    it still exists (capture reads its compaction marks there). The snapshot is spooled in
    the temp dir: a backup refuses before it streams anything when the member's db (as its
    status reports the size) does not fit there; ``room`` is told that need first, enough or not.
    Its times are ``now``'s, by default the repository's clock's.
    """
    now = now or repo.clock.now
    check_cluster_name(options.cluster)
    repo.require_create_only()
    started = now()
    backup_id = new_backup_id(started)
    source = choose_source_member(etcd, options.endpoints)
    previous = _newest_backup(repo, options.cluster)
    draft = _Draft(repo, options, backup_id, inspect)
    manifest: Manifest | None = None
    try:
        with spool_dir("backup", options.tmp_dir) as tmp:
            require_room(Path(tmp).parent, source.status.db_size + source.status.db_size // 20,
                         f"the backup's spooled snapshot (member {source.member.name}'s db)",
                         ROOM_HINT, free_space, room)
            snapshot_obj, info, state_revision = draft.store_snapshot(etcd, source, Path(tmp), progress)
            files_obj, entries = draft.store_files(Path(tmp)) if options.capture_files else (None, [])
        manifest = Manifest(
            id=backup_id,
            cluster=options.cluster,
            status=BackupStatus.COMPLETE,
            started_at=_rfc3339(started),
            finished_at=_rfc3339(now()),
            tool_version=__version__,
            source=_source_member(source),
            snapshot=info,
            compression=f"zstd:{options.zstd_level}",
            encryption="age" if options.recipients else None,
            recipients=tuple(r.text for r in options.recipients),
            objects=tuple(o for o in (snapshot_obj, files_obj) if o is not None),
            files=tuple(entries),
            labels={**options.labels, STATE_REVISION: str(state_revision)},
        )
        repo.commit(manifest)
        committed(manifest)
    except BaseException:
        if draft.discard() and manifest is not None:  # interrupted after the manifest was written: it stands
            committed(manifest)
        raise
    if previous is not None and previous.source.cluster_id != manifest.source.cluster_id:
        _log.warning(
            "backup %s is of etcd cluster %s, the previous backup filed as cluster %s (%s) of etcd cluster %s: "
            "expected after a restore (it gives etcd a new cluster id); if this is another etcd cluster, give "
            "it a cluster name of its own (--cluster): retention counts every backup of one name together",
            manifest.id, manifest.source.cluster_id, options.cluster, previous.id, previous.source.cluster_id)
    if previous is not None and started_time(previous) > started_time(manifest):
        _log.warning(
            "backup %s started before backup %s by this host's clock (%s, against %s): this clock is behind "
            "the one that took it, and 'latest' and keep-last, which go by start time, take that older backup "
            "for the newer; synchronise the nodes' clocks", manifest.id, previous.id, manifest.started_at,
            previous.started_at)
    if previous is not None and previous.encryption and not manifest.encryption:
        _log.warning(
            "backup %s is not encrypted, while the previous backup %s of cluster %s was (to %s): it holds every "
            "Secret of the cluster in clear; if that was not meant, give --encrypt-to (or encryption.recipients) "
            "again and delete this backup", manifest.id, previous.id, options.cluster, " ".join(previous.recipients))
    return manifest


def _newest_backup(repo: BackupRepository, cluster: str) -> Manifest | None:
    try:
        return repo.latest(cluster)
    except NotFound:
        return None


def commit_snapshot_file(
    repo: BackupRepository, options: BackupOptions, snapshot: Path, source: SourceMember,
    labels: dict[str, str], *, now: Callable[[], datetime] | None = None,
) -> Manifest:
    """Store a raw snapshot file (with etcd's trailer) as a backup, manifest last.

    For snapshots lifeboat wrote itself (synthetic full backups); ``source`` is the member the
    data came from originally. Its times are ``now``'s, by default the repository's clock's.
    """
    now = now or repo.clock.now
    check_cluster_name(options.cluster)
    repo.require_create_only()
    started = now()
    draft = _Draft(repo, options, new_backup_id(started))
    try:
        digest = SnapshotDigest()
        obj = draft.upload(stored_name(SNAPSHOT_OBJECT, bool(options.recipients)),
                           _trailer_checked(snapshot, digest), digest)
        db_sha256 = digest.verify_trailer()
        status = snapshot_status(snapshot)
        manifest = Manifest(
            id=draft.backup_id, cluster=options.cluster, status=BackupStatus.COMPLETE,
            started_at=_rfc3339(started), finished_at=_rfc3339(now()), tool_version=__version__,
            source=source,
            snapshot=SnapshotInfo(revision=status.revision, hash=status.hash, total_key=status.total_key,
                                  total_size=status.total_size, db_sha256=db_sha256),
            compression=f"zstd:{options.zstd_level}", encryption="age" if options.recipients else None,
            recipients=tuple(r.text for r in options.recipients), objects=(obj,),
            labels={**options.labels, **labels},
        )
        repo.commit(manifest)
    except BaseException:
        draft.discard()
        raise
    return manifest


class _Draft:
    """The objects of one backup being written, so that a failure can remove them."""

    def __init__(self, repo: BackupRepository, options: BackupOptions, backup_id: str,
                 inspect: Callable[[Path], object] = lambda snapshot: None) -> None:
        self.inspect = inspect
        self.repo = repo
        self.options = options
        self.backup_id = backup_id
        self.written = False

    def upload(self, name: str, raw: Iterator[Chunk], raw_digest: Digest) -> BackupObject:
        stored = Digest()
        encoded = encode(raw, self.options.zstd_level, self.options.recipients)
        self.written = True
        # With age, encoding already runs in its own thread (the age pump); without, zstd gets one.
        source = encoded if self.options.recipients else threaded(encoded, "encode")
        self.repo.write_object(self.options.cluster, self.backup_id, name, hashing(source, stored))
        return BackupObject(
            name=name, size=stored.size, sha256=stored.hexdigest(),
            raw_size=raw_digest.size, raw_sha256=raw_digest.hexdigest(),
        )

    def store_snapshot(
        self, etcd: SnapshotSource, source: SourceChoice, tmp: Path, progress: Progress
    ) -> tuple[BackupObject, SnapshotInfo, int]:
        """The snapshot object stored, what the offline reader found, and the revision the
        snapshot's state is at (:meth:`~lifeboat.snapshot.mvcc.SnapshotMeta.state_revision`)."""
        spool = tmp / "snapshot.db"
        # The leaf pages are summarised as the stream passes (PageScan); the rest of the
        # offline status read starts as soon as the spool is complete and checked, while
        # zstd, age and the upload are still draining.
        scan = PageScan()
        with ThreadPoolExecutor(1, thread_name_prefix="lifeboat-status") as pool:
            reading: list[Future[SnapshotStatus]] = []
            receiver = _SnapshotReceiver(
                etcd.snapshot(source.endpoint), spool, progress, scan=scan,
                on_complete=lambda: reading.append(pool.submit(snapshot_status, spool, scan=scan)),
            )
            obj = self.upload(stored_name(SNAPSHOT_OBJECT, bool(self.options.recipients)),
                              receiver.buffers.returned(threaded(receiver, "etcd-snapshot")),
                              receiver.digest)
            status = finished(reading[0])
        self.inspect(spool)
        info = SnapshotInfo(
            revision=status.revision, hash=status.hash, total_key=status.total_key,
            total_size=status.total_size, db_sha256=receiver.db_sha256,
        )
        return obj, info, read_meta(spool).state_revision(status.revision)

    def store_files(self, tmp: Path) -> tuple[BackupObject | None, list[CapturedFile]]:
        archive = tmp / "control-plane.tar"
        try:
            with private_file(archive) as out:
                entries = capture(self.options.root, out)
        except OSError as exc:  # writing the spool: reading a file fails as OperationFailed
            raise _spool_error(exc, archive, "the control-plane files") from None
        if not entries:
            return None, []
        digest = Digest()
        obj = self.upload(stored_name(FILES_OBJECT, bool(self.options.recipients)),
                          hashing(_read_file(archive), digest), digest)
        return obj, entries

    def discard(self) -> bool:
        """Remove what was uploaded; True when the backup turned out committed (left alone)."""
        if not self.written:
            return False
        try:
            return self.repo.discard_objects(self.options.cluster, self.backup_id)
        except Exception:  # the original failure matters more; leftovers have no manifest
            return False


class _SnapshotReceiver:
    """Iterates etcd's snapshot stream: spools it, hashes it, checks etcd's sha256 trailer.

    It yields the raw bytes (trailer included, exactly as ``etcdctl snapshot save`` writes
    them) as views of :attr:`buffers`, which whoever uses them last gives back
    (``receiver.buffers.returned(...)``). When the stream ends it verifies the trailer
    *before* finishing, so an upload fed from it never completes with a snapshot that failed
    the check.
    """

    def __init__(self, chunks: Iterator[bytes], spool: Path, progress: Progress,
                 on_complete: Callable[[], object] = lambda: None, scan: PageScan | None = None) -> None:
        self.chunks = chunks
        self.scan = scan
        self.on_complete = on_complete
        self.spool = spool
        self.progress = progress
        self.digest = SnapshotDigest()
        self.db_sha256 = ""
        self.buffers = PieceBuffers(READ_CHUNK, _PIECES)

    def cancel(self) -> None:
        """End the stream from another thread, at once (the backup was abandoned)."""
        cancel = getattr(self.chunks, "cancel", None)
        if cancel is not None:
            cancel()

    def __iter__(self) -> Iterator[memoryview]:
        try:
            # Snapshots hold every Secret of the cluster: owner-only, like etcdctl's files.
            with private_file(self.spool) as out:
                for chunk in self.buffers.pieces(self.chunks):
                    out.write(chunk)
                    self.digest.update(chunk)
                    if self.scan is not None:
                        self.scan.feed(chunk)
                    self.progress("snapshot", self.digest.size)
                    yield chunk
        except OSError as exc:
            raise _spool_error(exc, self.spool) from None
        finally:
            close = getattr(self.chunks, "close", None)
            if close is not None:
                close()
        self.db_sha256 = self.digest.verify_trailer()
        self.on_complete()


def _spool_error(exc: OSError, spool: Path, what: str = "the snapshot") -> OperationFailed:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OperationFailed(f"temp dir {spool.parent.parent} is full; free space or {ROOM_HINT}")
    return OperationFailed(f"cannot write {what} to {spool}: {exc.strerror}")


def _trailer_checked(path: Path, digest: SnapshotDigest) -> Iterator[bytes]:
    """A snapshot file's bytes; etcd's trailer is checked before the last chunk is passed on."""
    pending = b""
    for chunk in _read_file(path):
        if pending:
            yield pending
        digest.update(chunk)
        pending = chunk
    digest.verify_trailer()
    yield pending


def _read_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(READ_CHUNK), b"")


# A manifest's times, as capture writes its own: RFC 3339 UTC to the millisecond (a chain's
# window starts at its base's finish, which must not read earlier than it was).
_rfc3339 = seen_text


def _source_member(source: SourceChoice) -> SourceMember:
    st = source.status
    return SourceMember(
        member_id=f"{st.member_id:x}", name=source.member.name, endpoint=source.endpoint,
        etcd_version=st.version, cluster_id=f"{source.cluster_id:x}", raft_term=st.raft_term,
        raft_index=st.raft_index, is_leader=st.is_leader,
    )


def save_snapshot(etcd: SnapshotSource, endpoints: tuple[str, ...], path: Path,
                  progress: Progress = _no_progress) -> tuple[SourceChoice, int]:
    """Write a raw snapshot file like ``etcdctl snapshot save`` (trailer kept, checked).

    Written to ``path.part`` and renamed once complete and verified, so ``path`` never holds
    a partial snapshot. Returns the source and the file size.
    """
    source = choose_source_member(etcd, endpoints)
    part = part_path(path)
    receiver = _SnapshotReceiver(etcd.snapshot(source.endpoint), part, progress)
    try:
        for _ in receiver.buffers.returned(iter(receiver)):
            pass
        install_durably(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return source, receiver.digest.size

