from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from lifeboat.catalog.ids import is_backup_id, new_backup_id
from lifeboat.catalog.manifest import Manifest, SnapshotInfo, StoredObject
from lifeboat.catalog.layout import MARKER_KEY, backup_prefix
from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import AlreadyExists, IntegrityError, NotFound, RepositoryUnavailable, UsageError
from lifeboat.store.memory import Fault, MemoryStore

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)


def manifest(backup_id: str, cluster: str = "prod", status: str = "complete") -> Manifest:
    return Manifest(
        id=backup_id, cluster=cluster, status=status,  # type: ignore[arg-type]
        started_at="2026-11-22T03:00:00Z", finished_at="2026-11-22T03:00:09Z", tool_version="0.1.0",
        source=None, snapshot=SnapshotInfo(10, 1234, 99, 20480, "ab" * 32), compression="zstd:1",
        encryption=None, recipients=(),
        objects=(StoredObject("snapshot.db.zst", 100, "cd" * 32, 20512, "ef" * 32),),
    )


def stored(repo: BackupRepository, m: Manifest) -> Manifest:
    repo.store.put_bytes(repo.object_key(m, "snapshot.db.zst"), b"x" * 100)
    repo.commit(m)
    return m


def test_backup_ids_sort_by_time() -> None:
    ids = [new_backup_id(T0 + timedelta(seconds=s)) for s in (0, 1, 59, 3600, 86400)]
    assert ids == sorted(ids)
    assert all(is_backup_id(i) for i in ids)


def test_opening_an_empty_store_needs_create_and_writes_the_marker() -> None:
    store = MemoryStore()
    with pytest.raises(NotFound, match="no lifeboat repository"):
        BackupRepository.open(store)
    BackupRepository.open(store, create=True)
    marker = json.loads(store.get_bytes(MARKER_KEY))
    assert marker["format"] == "lifeboat-repository" and marker["version"] == 1
    BackupRepository.open(store)  # and now it opens without create


def test_a_foreign_non_empty_store_is_refused() -> None:
    store = MemoryStore()
    store.put_bytes("someone-elses/file", b"data")
    with pytest.raises(UsageError, match="not empty"):
        BackupRepository.open(store, create=True)


def test_a_newer_format_is_refused() -> None:
    store = MemoryStore()
    store.put_bytes(MARKER_KEY, json.dumps({"format": "lifeboat-repository", "version": 2}).encode())
    with pytest.raises(UsageError, match="upgrade lifeboat"):
        BackupRepository.open(store)


def test_manifest_is_create_only() -> None:
    repo = BackupRepository.open(MemoryStore(), create=True)
    m = stored(repo, manifest(new_backup_id(T0)))
    with pytest.raises(AlreadyExists):
        repo.commit(m)


def test_listing_ignores_objects_without_a_manifest_and_sorts_by_id() -> None:
    repo = BackupRepository.open(MemoryStore(), create=True)
    late = stored(repo, manifest(new_backup_id(T0 + timedelta(hours=1))))
    early = stored(repo, manifest(new_backup_id(T0)))
    orphan = new_backup_id(T0 + timedelta(hours=2))
    repo.store.put_bytes(backup_prefix("prod", orphan) + "snapshot.db.zst", b"partial")
    assert [m.id for m in repo.manifests()] == [early.id, late.id]
    assert repo.find("latest").id == late.id


def test_latest_skips_failed_backups_and_missing_ids_are_not_found() -> None:
    repo = BackupRepository.open(MemoryStore(), create=True)
    good = stored(repo, manifest(new_backup_id(T0)))
    stored(repo, manifest(new_backup_id(T0 + timedelta(hours=1)), status="failed"))
    assert repo.find("latest").id == good.id
    with pytest.raises(NotFound):
        repo.find(new_backup_id(T0 + timedelta(days=3)))
    with pytest.raises(UsageError):
        repo.find("not-an-id")


def test_a_malformed_manifest_is_an_integrity_error() -> None:
    repo = BackupRepository.open(MemoryStore(), create=True)
    key = backup_prefix("prod", new_backup_id(T0)) + "manifest.json"
    repo.store.put_bytes(key, b'{"format": 1, "id": 3}')
    with pytest.raises(IntegrityError, match="malformed"):
        list(repo.manifests())


class RecordingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []

    def delete(self, key: str) -> None:
        super().delete(key)
        self.deleted.append(key)


def test_delete_removes_data_first_and_the_manifest_last() -> None:
    store = RecordingStore()
    repo = BackupRepository.open(store, create=True)
    m = stored(repo, manifest(new_backup_id(T0)))
    repo.delete(m)
    assert store.deleted[-1].endswith("/manifest.json")
    assert store.deleted[0].endswith("/snapshot.db.zst")
    assert list(repo.manifests()) == []


def test_interrupted_delete_keeps_the_manifest_and_can_be_rerun() -> None:
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    m = stored(repo, manifest(new_backup_id(T0)))
    store.inject(Fault("delete", after_calls=1))
    with pytest.raises(RepositoryUnavailable):
        repo.delete(m)
    assert [x.id for x in repo.manifests()] == [m.id]
    repo.delete(m)
    assert store.keys() == [MARKER_KEY]
