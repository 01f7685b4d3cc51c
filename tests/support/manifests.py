"""Valid parts of a backup manifest, for tests that build manifests by hand."""

from __future__ import annotations

from lifeboat.catalog.manifest import SnapshotInfo, SourceMember, StoredObject

SOURCE = SourceMember(member_id="8e9e05c52164694d", name="m0", endpoint="https://127.0.0.1:2379",
                      etcd_version="3.5.1", cluster_id="cdf818194e3a8c32", raft_term=2, raft_index=42,
                      is_leader=True)


def snapshot_info(revision: int = 42, total_key: int = 10, total_size: int = 20480) -> SnapshotInfo:
    return SnapshotInfo(revision=revision, hash=1234, total_key=total_key, total_size=total_size,
                        db_sha256="ab" * 32)


def stored_object(name: str = "snapshot.db.zst", size: int = 100) -> StoredObject:
    return StoredObject(name=name, size=size, sha256="cd" * 32, raw_size=size * 3, raw_sha256="ef" * 32)
