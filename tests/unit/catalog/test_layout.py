"""One module names every object in the repository; other kinds never pass for a backup's."""

from __future__ import annotations

from lifeboat.catalog.layout import (
    MARKER_KEY,
    BackupObjectName,
    backup_object_key,
    chain_object_key,
    lock_key,
    manifest_key,
    parse_backup_key,
    pin_key,
    segment_key,
    stored_name,
)
from lifeboat.catalog.repository import BackupRepository
from lifeboat.store import MemoryStore

BACKUP = "20240501T100000Z-abcdef"


def test_a_backup_key_comes_apart_into_cluster_id_and_name() -> None:
    key = backup_object_key("prod", BACKUP, stored_name("snapshot.db", encrypted=True))
    assert key == f"clusters/prod/backups/{BACKUP}/snapshot.db.zst.age"
    assert parse_backup_key(key) == BackupObjectName("prod", BACKUP, "snapshot.db.zst.age")
    assert parse_backup_key(manifest_key("prod", BACKUP)).is_manifest  # type: ignore[union-attr]
    assert parse_backup_key(pin_key("prod", BACKUP)).is_pin  # type: ignore[union-attr]


def test_objects_of_other_kinds_are_not_a_backups() -> None:
    for key in (MARKER_KEY, chain_object_key("prod", "c1", "chain.json"), segment_key("prod", "c1", "1-9.jsonl.zst"),
                lock_key("prod", "capture"), "clusters/prod/chains/c1/pin.json", f"clusters/prod/backups/{BACKUP}"):
        assert parse_backup_key(key) is None, key


def test_a_pin_json_inside_a_capture_chain_is_not_a_pin() -> None:
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    store.put_bytes("clusters/prod/chains/c1/pin.json", b"{}")
    assert repo.pins() == {}
    assert list(repo.backup_objects()) == []
