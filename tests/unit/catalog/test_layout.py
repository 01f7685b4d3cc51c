"""One module names every object in the repository; other kinds never pass for a backup's."""

from __future__ import annotations

import pytest

from lifeboat.catalog.layout import (
    CURRENT_LAYOUT,
    LAYOUTS,
    MARKER_KEY,
    BackupObjectName,
    Layout,
    ObjectKind,
    backup_object_key,
    chain_object_key,
    is_manifest_key_of,
    lock_key,
    segment_key,
    stored_name,
)
from lifeboat.catalog.repository import BackupRepository
from lifeboat.store import MemoryStore

BACKUP = "20240501T100000Z-abcdef"
FORMAT_1, FORMAT_2 = LAYOUTS[1], LAYOUTS[2]


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=lambda layout: f"format-{layout.format}")
def test_a_backup_key_comes_apart_into_cluster_id_and_kind(layout: Layout) -> None:
    key = backup_object_key("prod", BACKUP, stored_name("snapshot.db", encrypted=True))
    assert key == f"clusters/prod/backups/{BACKUP}/snapshot.db.zst.age"
    assert layout.parse(key) == BackupObjectName("prod", BACKUP, ObjectKind.DATA)
    assert layout.parse(layout.manifest_key("prod", BACKUP)) == BackupObjectName("prod", BACKUP, ObjectKind.MANIFEST)
    assert layout.parse(layout.pin_key("prod", BACKUP)) == BackupObjectName("prod", BACKUP, ObjectKind.PIN)


def test_format_2_keeps_manifests_and_pins_in_flat_folders_and_is_what_lifeboat_creates() -> None:
    assert FORMAT_2.manifest_key("prod", BACKUP) == f"clusters/prod/manifests/{BACKUP}.json"
    assert FORMAT_2.pin_key("prod", BACKUP) == f"clusters/prod/pins/{BACKUP}.json"
    assert FORMAT_2.commit_folders("prod") == ("clusters/prod/manifests/", "clusters/prod/pins/")
    assert FORMAT_1.manifest_key("prod", BACKUP) == f"clusters/prod/backups/{BACKUP}/manifest.json"
    assert FORMAT_1.commit_folders("prod") == ("clusters/prod/backups/",)
    assert CURRENT_LAYOUT == FORMAT_2
    assert is_manifest_key_of(FORMAT_1.manifest_key("prod", BACKUP), "prod", BACKUP)
    assert is_manifest_key_of(FORMAT_2.manifest_key("prod", BACKUP), "prod", BACKUP)
    assert not is_manifest_key_of(FORMAT_2.manifest_key("prod", BACKUP), "prod", "20240501T100000Z-000000")


def test_a_manifest_json_in_a_format_2_backup_folder_commits_nothing() -> None:
    # Format 2 commits by manifests/<id>.json only: a stray manifest.json is one more data object.
    name = FORMAT_2.parse(f"clusters/prod/backups/{BACKUP}/manifest.json")
    assert name is not None and name.kind is ObjectKind.DATA
    assert FORMAT_1.parse(f"clusters/prod/manifests/{BACKUP}.json") is None


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=lambda layout: f"format-{layout.format}")
def test_objects_of_other_kinds_are_not_a_backups(layout: Layout) -> None:
    for key in (MARKER_KEY, chain_object_key("prod", "c1", "chain.json"), segment_key("prod", "c1", "1-9.jsonl.zst"),
                lock_key("prod", "capture"), "clusters/prod/chains/c1/pin.json", f"clusters/prod/backups/{BACKUP}",
                f"clusters/prod/manifests/{BACKUP}", "clusters/prod/manifests/.json",
                f"clusters/prod/pins/x/{BACKUP}.json", f"clusters//manifests/{BACKUP}.json"):
        assert layout.parse(key) is None, key


def test_a_file_in_the_flat_folders_that_is_no_backup_ids_is_not_a_backup() -> None:
    # Listed as a damaged backup "notes", it could not be removed: delete refuses a non-id.
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    for key in ("clusters/prod/manifests/notes.json", "clusters/prod/pins/notes.json",
                f"clusters/prod/manifests/{BACKUP.upper()}.json"):
        assert FORMAT_2.parse(key) is None, key
        store.put_bytes(key, b"{}")
    listing = repo.scan()
    assert (listing.backups, listing.damaged) == ((), ())
    assert list(repo.backup_objects()) == [] and repo.pins() == {}


def test_a_pin_json_inside_a_capture_chain_is_not_a_pin() -> None:
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    store.put_bytes("clusters/prod/chains/c1/pin.json", b"{}")
    assert repo.pins() == {}
    assert list(repo.backup_objects()) == []
