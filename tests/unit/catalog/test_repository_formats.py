"""Repository formats 1 and 2: where manifests and pins live, and the write and delete order of
each under a crash (kill -9) between any two store operations."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pytest

from lifeboat.catalog.ids import new_backup_id
from lifeboat.catalog.layout import MARKER_KEY
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.orphans import find_orphans
from lifeboat.catalog.pins import Pin
from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import NotFound
from lifeboat.store import MemoryStore
from lifeboat.store.base import ObjectInfo
from tests.support.manifests import fake_backup, stored_object
from tests.unit.catalog.test_repository import manifest

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
FORMATS = (1, 2)


def repository(store: MemoryStore, repository_format: int) -> BackupRepository:
    """A repository of ``repository_format``: format 1 as an older lifeboat created it."""
    if repository_format == 1:
        store.put_bytes(MARKER_KEY, json.dumps({"format": "lifeboat-repository", "version": 1,
                                                "created_at": "2026-01-01T00:00:00+00:00"}).encode())
    repo = BackupRepository.open(store, create=True)
    assert repo.layout.format == repository_format
    return repo


def test_a_new_repository_is_format_2_with_manifests_and_pins_in_flat_folders() -> None:
    store = MemoryStore()
    repo = BackupRepository.open(store, create=True)
    made = fake_backup(repo, T0)
    repo.pin(made, Pin.now("audit"))
    assert json.loads(store.get_bytes(MARKER_KEY))["version"] == 2
    assert store.keys() == [f"clusters/prod/backups/{made.id}/snapshot.db.zst",
                            f"clusters/prod/manifests/{made.id}.json",
                            f"clusters/prod/pins/{made.id}.json", MARKER_KEY]
    store.calls.clear()
    assert [b.id for b in repo.committed()] == [made.id] and repo.committed()[0].pinned
    assert store.calls["list"] == 4  # two calls, each the manifests' and the pins' folders


def test_a_format_1_repository_keeps_working_in_its_own_layout() -> None:
    store = MemoryStore()
    repo = repository(store, 1)
    # A backup exactly as lifeboat wrote it before format 2.
    old = manifest(new_backup_id(T0 - timedelta(days=1)))
    folder = f"clusters/prod/backups/{old.id}/"
    store.put_bytes(folder + "snapshot.db.zst", b"x" * 100)
    store.put_bytes(folder + "manifest.json", old.to_json())
    store.put_bytes(folder + "pin.json", Pin.now("keep").to_json())
    interrupted = new_backup_id(T0 - timedelta(days=2))
    store.put_bytes(f"clusters/prod/backups/{interrupted}/snapshot.db.zst", b"y")

    new = fake_backup(repo, T0)
    assert store.stat(f"clusters/prod/backups/{new.id}/manifest.json") is not None
    assert not [key for key in store.keys() if "/manifests/" in key or "/pins/" in key]
    listing = BackupRepository.open(store).scan()
    assert [m.id for m in listing.backups] == [old.id, new.id] and set(listing.pins) == {("prod", old.id)}
    assert repo.find("latest") == new and repo.find(old.id) == old
    assert [o.backup_id for o in find_orphans(repo)] == [interrupted]
    repo.delete(old)
    assert not [key for key in store.keys() if old.id in key]
    assert json.loads(store.get_bytes(MARKER_KEY))["version"] == 1  # never rewritten


@pytest.mark.parametrize("repository_format", FORMATS)
def test_orphans_are_the_uncommitted_objects_and_pins_of_either_format(repository_format: int) -> None:
    store = MemoryStore()
    repo = repository(store, repository_format)
    committed = fake_backup(repo, T0)
    repo.pin(committed, Pin.now())
    orphan = new_backup_id(T0 - timedelta(hours=1))
    repo.write_object("prod", orphan, "snapshot.db.zst", [b"partial"])
    store.put_bytes(repo.layout.pin_key("prod", orphan), Pin.now().to_json())  # pinned, then deleted meanwhile
    [found] = find_orphans(repo)
    assert found.backup_id == orphan
    assert sorted(found.keys) == sorted([f"clusters/prod/backups/{orphan}/snapshot.db.zst",
                                         repo.layout.pin_key("prod", orphan)])


class Killed(BaseException):
    """The process died (kill -9): nothing after this runs, not even cleanup."""


class DyingStore(MemoryStore):
    """A memory store whose process dies just before its ``dies_at``-th write or delete."""

    def __init__(self) -> None:
        super().__init__()
        self.dies_at: int | None = None
        self.changes = 0

    def _change(self) -> None:
        if self.dies_at is not None and self.changes >= self.dies_at:
            raise Killed
        self.changes += 1

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> ObjectInfo:
        self._change()
        return super().put_stream(key, chunks)

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> ObjectInfo:
        self._change()
        return super().put_bytes(key, data, create_only=create_only)

    def delete(self, key: str) -> None:
        self._change()
        super().delete(key)


def every_crash(repository_format: int, before: Callable[[BackupRepository], Manifest],
                step: Callable[[BackupRepository, Manifest], object],
                check: Callable[[BackupRepository, Manifest], None]) -> int:
    """Run ``step`` killed before each of its store changes in turn (and once not killed), and
    ``check`` what a new process finds after each. Returns how many changes ``step`` makes."""
    dies_at = 0
    while True:
        store = DyingStore()
        repo = repository(store, repository_format)
        made = before(repo)
        store.changes, store.dies_at = 0, dies_at
        try:
            step(repo, made)
            finished = True
        except Killed:
            finished = False
        store.dies_at = None
        check(BackupRepository.open(store), made)
        if finished:
            return dies_at
        dies_at += 1


def uncommitted(repo: BackupRepository) -> Manifest:
    backup_id = new_backup_id(T0)
    objects = (stored_object("snapshot.db.zst", 7), stored_object("control-plane.tar.zst", 5))
    return manifest(backup_id).model_copy(update={"objects": objects})


def write_backup(repo: BackupRepository, m: Manifest) -> None:
    """What the backup pipeline does: the data objects, then the manifest."""
    repo.write_object(m.cluster, m.id, "snapshot.db.zst", [b"s" * 7])
    repo.write_object(m.cluster, m.id, "control-plane.tar.zst", [b"c" * 5])
    repo.commit(m)


@pytest.mark.parametrize("repository_format", FORMATS)
def test_a_backup_killed_at_any_step_is_listed_only_once_whole(repository_format: int) -> None:
    def check(repo: BackupRepository, m: Manifest) -> None:
        listed = [b.id for b in repo.committed()]
        if repo.store.stat(repo.manifest_key(m)) is None:
            assert listed == [] and repo.scan().backups == ()
            with pytest.raises(NotFound):
                repo.find("latest")
            left = [key for key in repo.store.list("clusters/")]
            assert [o.backup_id for o in find_orphans(repo)] == ([m.id] if left else [])
        else:
            assert listed == [m.id] and repo.find("latest") == m
            assert repo.missing_objects(m) == [] and find_orphans(repo) == []

    assert every_crash(repository_format, uncommitted, write_backup, check) == 3


def committed_and_pinned(repo: BackupRepository) -> Manifest:
    m = uncommitted(repo)
    write_backup(repo, m)
    repo.pin(m, Pin.now("audit"))
    return m


@pytest.mark.parametrize("repository_format", FORMATS)
def test_a_delete_killed_at_any_step_leaves_the_backup_listed_until_its_manifest_goes_last(
        repository_format: int) -> None:
    def check(repo: BackupRepository, m: Manifest) -> None:
        left = [obj.key for obj in repo.store.list("clusters/")]
        if repo.store.stat(repo.manifest_key(m)) is None:
            # The pin goes after the manifest (no pin can be written while it is there): at most it is
            # left, as an orphan of nothing but its pin that the next prune removes at once.
            assert left in ([], [repo.layout.pin_key(m.cluster, m.id)]) and repo.committed() == []
            assert [(o.backup_id, o.pin_only) for o in find_orphans(repo)] == ([(m.id, True)] if left else [])
            return
        assert [b.id for b in repo.committed()] == [m.id]
        assert find_orphans(repo) == []
        if len(left) < 4:  # begun: what is gone is reported, and running the delete again finishes it
            assert repo.missing_objects(m)
            repo.delete(m)
            assert list(repo.store.list("clusters/")) == [] and repo.committed() == []

    # Two data objects, the pin, the manifest.
    assert every_crash(repository_format, committed_and_pinned, lambda repo, m: repo.delete(m), check) == 4
