"""Valid parts of a backup manifest, for tests that build manifests by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

from lifeboat.catalog.file_archive import CapturedFile
from lifeboat.catalog.ids import new_backup_id
from lifeboat.catalog.manifest import BackupObject, BackupStatus, Manifest, SnapshotInfo, SourceMember
from lifeboat.catalog.repository import BackupRepository

SOURCE = SourceMember(member_id="8e9e05c52164694d", name="m0", endpoint="https://127.0.0.1:2379",
                      etcd_version="3.5.1", cluster_id="cdf818194e3a8c32", raft_term=2, raft_index=42,
                      is_leader=True)


def snapshot_info(revision: int = 42, total_key: int = 10, total_size: int = 20480) -> SnapshotInfo:
    return SnapshotInfo(revision=revision, hash=1234, total_key=total_key, total_size=total_size,
                        db_sha256="ab" * 32)


def stored_object(name: str = "snapshot.db.zst", size: int = 100) -> BackupObject:
    return BackupObject(name=name, size=size, sha256="cd" * 32, raw_size=size * 3, raw_sha256="ef" * 32)


def fake_backup(repo: BackupRepository, started: datetime, cluster: str = "prod", *,
                files: int = 0) -> Manifest:
    """A committed backup with a valid manifest and a tiny data object (nothing restorable).

    ``files`` captured control-plane files make the manifest as large as a kubeadm node's.
    """
    backup_id = new_backup_id(started)
    repo.write_object(cluster, backup_id, "snapshot.db.zst", [b"not a real snapshot"])
    captured = tuple(
        CapturedFile(path=f"/etc/kubernetes/pki/file-{i}.crt", mode=0o644, uid=0, gid=0, owner="root",
                     group="root", mtime_ns=1_700_000_000_000_000_000, size=1200, sha256="ab" * 32,
                     kind="file")
        for i in range(files)
    )
    manifest = Manifest(
        id=backup_id, cluster=cluster, status=BackupStatus.COMPLETE,
        started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        finished_at=(started + timedelta(seconds=9)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        tool_version="test", source=SOURCE, snapshot=snapshot_info(), compression="zstd:1",
        encryption=None, recipients=(), objects=(stored_object(size=19),), files=captured,
    )
    repo.commit(manifest)
    return manifest
