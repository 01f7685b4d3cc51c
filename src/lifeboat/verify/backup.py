"""Checking a stored backup end to end, without etcd.

Fetch every object, check its stored sha256, decrypt, decompress, check the raw sha256,
check etcd's own sha256 trailer, read the snapshot offline and compare revision, hash, key
count and size with the manifest, and check every control-plane file against its sha256.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.codec import decoded_pieces
from lifeboat.catalog.layout import FILES_OBJECT, SNAPSHOT_OBJECT
from lifeboat.catalog.manifest import BackupObject, BackupStatus, Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.disk import FreeSpace, RoomReport, free_bytes, measure_room
from lifeboat.catalog.streams import Digest, SnapshotDigest, hashing, private_file
from lifeboat.errors import DecryptionError, IntegrityError, LifeboatError, OperationFailed, UsageError
from lifeboat.etcd.data_dir import WAL_SEGMENT_BYTES
from lifeboat.catalog.file_archive import verify_archive
from lifeboat.snapshot import PageScan, snapshot_status
from lifeboat.snapshot.spool import ROOM_HINT, spool_dir


@dataclass(frozen=True)
class Check:
    """One thing verify looked at, and what it found."""

    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    backup_id: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)


Progress = Callable[[str, int], None]


def verify_backup(
    repo: BackupRepository, manifest: Manifest, identities: Sequence[Identity] | None, *,
    tmp_dir: Path | None = None,
    keep_snapshot: Path | None = None,
    progress: Progress = lambda stage, done: None,
    free_space: FreeSpace = free_bytes,
    room: RoomReport = lambda need: None,
    room_hint: str | None = None,
) -> VerifyReport:
    """Verify ``manifest``'s backup. ``keep_snapshot`` also writes the raw db there.

    Refuses (NoRoom) before any download when the raw snapshot and archive do not fit; ``room``
    is told each need first, enough or not. ``room_hint`` says what to do then, for a caller
    whose user has no ``--tmp-dir`` to pass (a restore writes beside the data dir).
    """
    if manifest.status != BackupStatus.COMPLETE:
        raise OperationFailed(f"backup {manifest.id} is {manifest.status}, not complete")
    if manifest.encryption and not identities:
        raise UsageError(
            f"backup {manifest.id} is encrypted with age; pass --identity FILE (or set the config "
            f"file's encryption.identity-files) with a key for one of its recipients ({', '.join(r[:16] + '…' for r in manifest.recipients)})"
        )
    report = VerifyReport(manifest.id)
    keys = identities if manifest.encryption else None
    with spool_dir("verify", tmp_dir) as tmp:
        require_verify_room(manifest, Path(tmp).parent, keep_snapshot, free_space, report=room, hint=room_hint)
        snapshot_obj = manifest.object_named(SNAPSHOT_OBJECT)
        if snapshot_obj is None:
            report.add("snapshot object", False, "manifest lists no snapshot object")
            return report
        spool = keep_snapshot or Path(tmp) / "snapshot.db"
        scan = PageScan()  # the snapshot's leaf pages, summarised as they are written
        if _fetch(repo, manifest, snapshot_obj, keys, spool, report, progress, SnapshotDigest(), scan):
            _check_snapshot(manifest, spool, report, scan)
        files_obj = manifest.object_named(FILES_OBJECT)
        if files_obj is not None:
            archive = Path(tmp) / "control-plane.tar"
            if _fetch(repo, manifest, files_obj, keys, archive, report, progress, Digest()):
                _check_files(manifest, archive, report)
        elif manifest.files:
            report.add("control-plane files", False, "files are listed but no archive is stored")
    # A download that began before a delete goes on reading what was unlinked (a local file
    # stays readable while open): look again, so a deleted backup is never "verified".
    gone = repo.missing_objects(manifest)
    report.add("backup still in the repository", not gone, "; ".join(gone) or "manifest and every object present")
    if gone:
        # A read that failed because the backup was deleted meanwhile is explained by this
        # check: it goes first, as the reason.
        report.checks.insert(0, report.checks.pop())
    return report


def replay_need(snapshot: Path, rows: int, copies: int) -> int:
    """What a point's replay into ``snapshot`` needs free beside it: the ``rows`` bytes it adds,
    then ``copies`` copies of the grown snapshot written next (a drill's or the restore tool's
    data dir) and a WAL segment."""
    return rows + copies * (snapshot.stat().st_size + rows) + WAL_SEGMENT_BYTES


def require_verify_room(manifest: Manifest, tmp_dir: Path, keep_snapshot: Path | None,
                        free_space: FreeSpace = free_bytes, extra: int = 0,
                        report: RoomReport = lambda need: None, extra_what: str = "a restored copy",
                        hint: str | None = None) -> None:
    """Refuse unless the raw snapshot (where it is written) and the files archive fit.

    ``extra`` bytes more are needed beside the snapshot (a drill's restored db: ``extra_what``
    says what they are). ``report`` is told every need before any is refused. ``hint``, when
    given, is the advice of every refusal.
    """
    raw = {o.name: o.raw_size for o in manifest.objects}
    snapshot = sum(size for name, size in raw.items() if name.startswith(SNAPSHOT_OBJECT))
    files = sum(size for name, size in raw.items() if name.startswith(FILES_OBJECT))
    beside = keep_snapshot.parent if keep_snapshot is not None else tmp_dir
    needs = {tmp_dir: files}
    needs[beside] = needs.get(beside, 0) + snapshot + extra
    what = (f"checking backup {manifest.id} (its raw snapshot and files"
            + (f", and {extra_what}" if extra else "") + ")")
    rooms = [measure_room(path, needed, what, free_space) for path, needed in needs.items()]
    for room in rooms:
        report(room)
    for room in rooms:
        # The spool moves with --tmp-dir; a snapshot kept elsewhere (--save-snapshot) does not.
        room.require(hint or (ROOM_HINT if room.path == tmp_dir else "keep the snapshot on a disk with room"))


def _fetch(
    repo: BackupRepository, manifest: Manifest, obj: BackupObject,
    identities: Sequence[Identity] | None, dest: Path, report: VerifyReport, progress: Progress,
    raw: Digest, scan: PageScan | None = None,
) -> bool:
    """Download, decode and write ``obj`` to ``dest``, recording the checksum checks.

    With a :class:`SnapshotDigest` for ``raw``, etcd's own sha256 trailer is checked in the
    same pass; ``scan`` is fed the decoded bytes as they are written.
    """
    stored = Digest()
    try:
        fetched = hashing(repo.read_object(manifest, obj.name), stored)
        with private_file(dest) as out:
            for piece in decoded_pieces(fetched, identities, obj.raw_size):
                raw.update(piece)
                out.write(piece)
                if scan is not None:
                    scan.feed(piece)
                progress(obj.name, raw.size)
    except DecryptionError:
        raise  # no identity given opens it: nothing about the backup is known yet
    except IntegrityError as exc:
        # Decoding stopped part-way; hash the whole stored object to tell a repository copy
        # that changed since the backup from one that was always wrong.
        whole = _stored_digest(repo, manifest, obj)
        if whole is not None and (whole.size, whole.hexdigest()) != (obj.size, obj.sha256):
            report.add(f"{obj.name} stored sha256", False,
                       f"{whole.hexdigest()} ({whole.size} bytes) differs from the manifest's "
                       f"{obj.sha256} ({obj.size} bytes): the stored object was altered or damaged")
        report.add(f"{obj.name} decode", False, str(exc))
        return False
    except OperationFailed as exc:
        report.add(f"{obj.name} fetch", False, str(exc))
        return False
    except OSError as exc:
        raise OperationFailed(f"cannot write {dest}: {exc.strerror or exc}") from None
    if isinstance(raw, SnapshotDigest):
        try:
            raw.verify_trailer()
        except IntegrityError as exc:
            report.add("etcd sha256 trailer", False, str(exc))
            return False
        report.add("etcd sha256 trailer", True, "present and matches the db")
    ok = report.add(f"{obj.name} stored size", stored.size == obj.size,
                    f"{stored.size} bytes (manifest: {obj.size})")
    ok &= report.add(f"{obj.name} stored sha256", stored.hexdigest() == obj.sha256,
                     stored.hexdigest())
    ok &= report.add(f"{obj.name} raw sha256", raw.hexdigest() == obj.raw_sha256
                     and raw.size == obj.raw_size, f"{raw.hexdigest()} ({raw.size} bytes)")
    return ok


def _stored_digest(repo: BackupRepository, manifest: Manifest, obj: BackupObject) -> Digest | None:
    """sha256 and size of the stored object as it is now; None if it cannot be read."""
    digest = Digest()
    try:
        for chunk in repo.read_object(manifest, obj.name):
            digest.update(chunk)
    except LifeboatError:
        return None
    return digest


def _check_snapshot(manifest: Manifest, spool: Path, report: VerifyReport, scan: PageScan) -> None:
    expected = manifest.snapshot
    try:
        status = snapshot_status(spool, scan=scan)
    except LifeboatError as exc:
        report.add("snapshot readable", False, str(exc))
        return
    for name, got, want in (
        ("revision", status.revision, expected.revision),
        ("hash", status.hash, expected.hash),
        ("total keys", status.total_key, expected.total_key),
        ("total size", status.total_size, expected.total_size),
    ):
        report.add(f"snapshot {name}", got == want, f"{got} (manifest: {want})")


def _check_files(manifest: Manifest, archive: Path, report: VerifyReport) -> None:
    expected = list(manifest.files)
    try:
        with archive.open("rb") as f:
            verify_archive(f, expected)
    except IntegrityError as exc:
        report.add("control-plane files", False, str(exc))
        return
    report.add("control-plane files", True, f"{len(expected)} files match their sha256")

