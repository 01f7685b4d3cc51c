"""The local manifest cache spares downloads but never decides which backups exist."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from lifeboat.catalog.ids import new_backup_id
from lifeboat.catalog.file_archive import CapturedFile
from lifeboat.catalog.manifest import BackupSummary, Manifest
from lifeboat.catalog.manifest_cache import CACHE_FILE, ManifestCache, default_cache_dir
from lifeboat.catalog.repository import BackupRepository
from lifeboat.clock import FakeClock
from lifeboat.store.memory import MemoryStore
from tests.unit.catalog.test_repository import T0, half_hourly, manifest, rewrite, stored, stored_document


def cached_repo(store: MemoryStore, directory: Path) -> BackupRepository:
    """The repository as a command opens it with a cache; the store's counters start afresh."""
    repo = BackupRepository.open(store, clock=FakeClock(T0), cache=ManifestCache(directory, store.url))
    store.calls.clear()
    return repo


def test_a_second_listing_downloads_no_manifest_and_shows_the_same_backups(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 300)

    first = cached_repo(store, tmp_path).scan()
    assert store.calls["get_range"] == 300
    second = cached_repo(store, tmp_path).scan()
    assert store.calls["get_range"] == 0 and store.calls["list"] == 2  # the manifests and the pins
    assert second.backups == first.backups == tuple(made)


def test_a_deleted_backup_is_never_shown_from_the_cache(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 20)
    cached_repo(store, tmp_path).scan()
    repo = cached_repo(store, tmp_path)
    repo.delete(made[4])
    store.delete(repo.manifest_key(made[9]))  # data left behind: not a backup

    listing = cached_repo(store, tmp_path).scan()
    assert [m.id for m in listing.backups] == [m.id for i, m in enumerate(made) if i not in (4, 9)]
    assert store.calls["get_range"] == 0


def test_a_manifest_replaced_under_its_key_is_downloaded_again(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 10)
    cached_repo(store, tmp_path).scan()
    repo = cached_repo(store, tmp_path)
    # Same key, same size, other content: only the store's version of the object tells.
    key = repo.manifest_key(made[3])
    replacement = made[3].model_copy(update={"tool_version": "9.9.9"}).to_json()
    assert len(replacement) == len(store.get_bytes(key))
    store.delete(key)
    store.put_bytes(key, replacement)

    listing = cached_repo(store, tmp_path).scan()
    assert store.calls["get_range"] == 1
    assert listing.backups[3].tool_version == "9.9.9"
    assert listing.backups[:3] + listing.backups[4:] == tuple(made[:3] + made[4:])


def test_a_damaged_manifest_is_reported_damaged_every_time(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 10)
    rewrite(BackupRepository.open(store), made[2], {"format": 1, "id": 3})

    for _ in range(2):
        listing = cached_repo(store, tmp_path).scan()
        assert [d.id for d in listing.damaged] == [made[2].id]
        assert made[2].id not in [m.id for m in listing.backups]
    assert store.calls["get_range"] == 1  # read again, never cached


def test_a_backup_whose_manifest_becomes_damaged_is_no_longer_shown_as_readable(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 5)
    cached_repo(store, tmp_path).scan()
    repo = cached_repo(store, tmp_path)
    key = rewrite(repo, made[1], {**stored_document(repo, made[1]), "status": 7})

    listing = cached_repo(store, tmp_path).scan()
    assert [(d.id, d.key) for d in listing.damaged] == [(made[1].id, key)]


@pytest.mark.parametrize("garbage", [b"", b"not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_corrupt_cache_file_costs_downloads_and_is_replaced(tmp_path: Path, garbage: bytes) -> None:
    store = MemoryStore()
    made = half_hourly(store, 30)
    (tmp_path / CACHE_FILE).write_bytes(garbage)

    assert cached_repo(store, tmp_path).scan().backups == tuple(made)
    assert store.calls["get_range"] == 30
    assert cached_repo(store, tmp_path).scan().backups == tuple(made)
    assert store.calls["get_range"] == 0


def test_a_damaged_or_misfiled_cache_entry_is_downloaded_instead_of_shown(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 5)
    cached_repo(store, tmp_path).scan()
    with sqlite3.connect(tmp_path / CACHE_FILE) as db:
        db.execute("UPDATE manifest SET document = ? WHERE key LIKE ?", (b'{"id": "x"}', f"%{made[0].id}%"))
        db.execute("UPDATE manifest SET document = ? WHERE key LIKE ?",
                   (made[2].model_dump_json().encode(), f"%{made[1].id}%"))
    db.close()

    assert cached_repo(store, tmp_path).scan().backups == tuple(made)
    assert store.calls["get_range"] == 2


def test_a_cache_of_another_repository_is_not_used(tmp_path: Path) -> None:
    ours, theirs = MemoryStore("memory://ours"), MemoryStore("memory://theirs")
    backup_id = new_backup_id(T0)
    # The same key and size in both, written as the same (first) write of each store.
    mine = stored(BackupRepository.open(ours, create=True), manifest(backup_id))
    other = stored(BackupRepository.open(theirs, create=True),
                   manifest(backup_id).model_copy(update={"tool_version": "0.1.1"}))
    cached_repo(theirs, tmp_path).scan()

    assert cached_repo(ours, tmp_path).scan().backups == (mine,)
    assert ours.calls["get_range"] == 1
    assert cached_repo(theirs, tmp_path).scan().backups == (other,)
    assert theirs.calls["get_range"] == 0


def test_two_listings_filling_the_cache_at_once_both_see_every_backup(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 400)
    seen: list[tuple[Manifest, ...]] = []

    def listing() -> None:
        seen.append(cached_repo(store, tmp_path).scan().backups)

    threads = [threading.Thread(target=listing) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen == [tuple(made)] * 3
    assert cached_repo(store, tmp_path).scan().backups == tuple(made)
    assert store.calls["get_range"] == 0


def test_a_cache_another_writer_holds_is_passed_over_not_waited_for_forever(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 5)
    other = MemoryStore("memory://other")
    half_hourly(other, 1)
    cached_repo(other, tmp_path).scan()  # the file exists, with nothing of ours
    holder = sqlite3.connect(tmp_path / CACHE_FILE)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        assert cached_repo(store, tmp_path).scan().backups == tuple(made)
        assert time.monotonic() - started < 30
        assert store.calls["get_range"] == 5
    finally:
        holder.rollback()
        holder.close()
    cached_repo(store, tmp_path).scan()
    assert store.calls["get_range"] == 5  # nothing was kept while the other writer held it


def test_a_full_listing_forgets_backups_that_are_gone(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 10)
    cached_repo(store, tmp_path).scan()
    repo = cached_repo(store, tmp_path)
    for m in made[:6]:
        repo.delete(m)
    repo.scan(last=2)  # a partial listing cannot tell what is gone
    assert _rows(tmp_path) == 10

    repo.scan()
    assert _rows(tmp_path) == 4


def _rows(directory: Path) -> int:
    with sqlite3.connect(directory / CACHE_FILE) as db:
        count: int = db.execute("SELECT count(*) FROM manifest").fetchone()[0]
    db.close()
    return count


def test_the_cache_is_readable_only_by_its_user(tmp_path: Path) -> None:
    store = MemoryStore()
    half_hourly(store, 2)
    directory = tmp_path / "cache" / "lifeboat"
    directory.mkdir(parents=True, mode=0o755)
    old = os.umask(0o022)
    try:
        cached_repo(store, directory).scan()
    finally:
        os.umask(old)

    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / CACHE_FILE).stat().st_mode) == 0o600


def test_an_unwritable_cache_directory_only_costs_downloads(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 3)
    (tmp_path / "file").write_text("in the way")

    assert cached_repo(store, tmp_path / "file" / "cache").scan().backups == tuple(made)
    assert store.calls["get_range"] == 3


def test_the_cache_directory_is_lifeboats_own_variable_else_xdgs() -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": "/var/cache/me", "HOME": "/home/me"}) == Path("/var/cache/me/lifeboat")
    assert default_cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/home/me"}) == Path("/home/me/.cache/lifeboat")
    assert default_cache_dir({"HOME": "/home/me"}) == Path("/home/me/.cache/lifeboat")
    assert default_cache_dir({"LIFEBOAT_CACHE_DIR": "/srv/c", "XDG_CACHE_HOME": "/x"}) == Path("/srv/c")


def test_latest_and_by_id_reads_are_unchanged_by_the_cache(tmp_path: Path) -> None:
    store = MemoryStore()
    made = half_hourly(store, 50)
    cached_repo(store, tmp_path).scan()
    repo = cached_repo(store, tmp_path)
    newer = stored(repo, manifest(new_backup_id(T0 + timedelta(minutes=1))))

    assert repo.find("latest") == newer
    assert repo.find(made[3].id) == made[3]


def summaries(repo: BackupRepository, last: int | None = None) -> tuple[BackupSummary, ...]:
    """What ``lifeboat list`` shows: every page of summaries, in order."""
    return tuple(b for page in repo.summary_pages(last=last) for b in page.backups)


def with_files(store: MemoryStore, count: int) -> list[Manifest]:
    """``count`` half-hourly backups, each with two captured files."""
    made = half_hourly(store, count)
    repo = BackupRepository.open(store)
    files = tuple(CapturedFile(path=path, mode=0o600, uid=0, gid=0, owner="root", group="root",
                               mtime_ns=1_700_000_000_000_000_000, size=1200, sha256="ab" * 32, kind="file")
                  for path in ("/etc/kubernetes/admin.conf", "/etc/kubernetes/pki/ca.key"))
    return [rewrite_manifest(repo, m.model_copy(update={"files": files})) for m in made]


def warmed(tmp_path: Path, count: int) -> tuple[MemoryStore, list[Manifest]]:
    """``count`` backups with files whose summaries one listing has already cached in ``tmp_path``."""
    store = MemoryStore()
    made = with_files(store, count)
    summaries(cached_repo(store, tmp_path))
    return store, made


def rewrite_manifest(repo: BackupRepository, m: Manifest) -> Manifest:
    key = repo.manifest_key(m)
    repo.store.delete(key)
    repo.store.put_bytes(key, m.to_json())
    return m


def test_a_warm_summary_listing_downloads_nothing_and_counts_the_files(tmp_path: Path) -> None:
    store = MemoryStore()
    made = with_files(store, 300)

    first = summaries(cached_repo(store, tmp_path))
    assert store.calls["get_range"] == 300
    second = summaries(cached_repo(store, tmp_path))
    assert store.calls["get_range"] == 0 and store.calls["list"] == 2  # the manifests and the pins
    assert second == first == tuple(BackupSummary.of(m) for m in made)
    assert {b.files for b in second} == {2} and all(not b.manifest.files for b in second)


def test_a_full_listing_fills_the_summaries_list_reads(tmp_path: Path) -> None:
    store = MemoryStore()
    made = with_files(store, 20)
    cached_repo(store, tmp_path).scan()  # prune and the agent read whole manifests

    assert summaries(cached_repo(store, tmp_path)) == tuple(BackupSummary.of(m) for m in made)
    assert store.calls["get_range"] == 0


def test_the_summary_cache_never_shows_a_deleted_backup(tmp_path: Path) -> None:
    store, made = warmed(tmp_path, 20)
    repo = cached_repo(store, tmp_path)
    repo.delete(made[4])
    store.delete(repo.manifest_key(made[9]))  # data left behind: not a backup
    store.delete(repo.manifest_key(made[19]))  # the newest

    for last in (None, 3):
        shown = summaries(cached_repo(store, tmp_path), last)
        expected = [m.id for i, m in enumerate(made) if i not in (4, 9, 19)]
        assert [b.id for b in shown] == expected[-last:] if last else expected
        assert store.calls["get_range"] == 0


def test_the_summary_cache_never_hides_a_new_backup(tmp_path: Path) -> None:
    store, made = warmed(tmp_path, 20)
    repo = cached_repo(store, tmp_path)
    older = stored(repo, manifest(new_backup_id(T0 - timedelta(days=30))))  # among the others by id
    newer = stored(repo, manifest(new_backup_id(T0 + timedelta(days=1))))

    shown = summaries(cached_repo(store, tmp_path))
    assert [b.id for b in shown] == [older.id] + [m.id for m in made] + [newer.id]
    assert store.calls["get_range"] == 2
    assert summaries(cached_repo(store, tmp_path), last=1) == (BackupSummary.of(newer),)


def test_a_manifest_replaced_under_its_key_is_summarised_afresh(tmp_path: Path) -> None:
    store, made = warmed(tmp_path, 5)
    repo = cached_repo(store, tmp_path)
    replacement = made[3].model_copy(update={"tool_version": "9.9.9"})
    assert len(replacement.to_json()) == len(made[3].to_json())
    rewrite_manifest(repo, replacement)

    shown = summaries(cached_repo(store, tmp_path))
    assert store.calls["get_range"] == 1
    assert shown[3].manifest.tool_version == "9.9.9"


def test_a_damaged_or_misfiled_summary_row_is_downloaded_instead_of_shown(tmp_path: Path) -> None:
    store, made = warmed(tmp_path, 5)
    with sqlite3.connect(tmp_path / CACHE_FILE) as db:
        db.execute("UPDATE summary SET document = ? WHERE key LIKE ?", (b'{"id": "x"}', f"%{made[0].id}%"))
        db.execute("UPDATE summary SET document = ? WHERE key LIKE ?",
                   (BackupSummary.of(made[2]).manifest.model_dump_json().encode(), f"%{made[1].id}%"))
        db.execute("UPDATE summary SET files = 'two' WHERE key LIKE ?", (f"%{made[3].id}%",))
        db.execute("UPDATE summary SET document = ? WHERE key LIKE ?",  # files in a summary row: not ours
                   (made[4].model_dump_json().encode(), f"%{made[4].id}%"))
    db.close()

    assert summaries(cached_repo(store, tmp_path)) == tuple(BackupSummary.of(m) for m in made)
    assert store.calls["get_range"] == 4


def test_a_full_listing_forgets_gone_backups_summaries_too(tmp_path: Path) -> None:
    store, made = warmed(tmp_path, 10)
    repo = cached_repo(store, tmp_path)
    for m in made[:6]:
        repo.delete(m)
    summaries(repo)
    with sqlite3.connect(tmp_path / CACHE_FILE) as db:
        assert db.execute("SELECT count(*) FROM summary").fetchone()[0] == 4
    db.close()
