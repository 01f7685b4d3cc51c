"""Pruning a repository: dry run, exact deletions, pins, orphans, interrupted re-runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from lifeboat.retention.prune import apply_prune, plan_prune
from lifeboat.catalog.ids import new_backup_id
from lifeboat.clock import FakeClock
from lifeboat.catalog.manifest import BackupStatus, Manifest
from lifeboat.catalog.pins import Pin
from lifeboat.catalog.repository import BackupRepository
from lifeboat.errors import OperationFailed, RepositoryUnavailable, Unsupported, UsageError
from lifeboat.store import Fault, MemoryStore
from lifeboat.store.base import IncompleteUpload
from lifeboat.retention import KeepLast, KeepWithin, Verdict
from tests.support.manifests import SOURCE, snapshot_info, stored_object

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def store_backup(repo: BackupRepository, started: datetime, *, cluster: str = "prod",
                 status: str = "complete", commit: bool = True) -> Manifest:
    """Two data objects and (with ``commit``) a manifest, as the backup pipeline leaves them."""
    backup_id = new_backup_id(started)
    clock = getattr(repo.store, "clock", None)
    if isinstance(clock, FakeClock):  # the store stamps the objects with the time the backup ran
        clock.jump_wall((started - clock.now()).total_seconds())
    objects = []
    for name, size in (("snapshot.db.zst", 300), ("control-plane.tar.zst", 100)):
        repo.store.put_bytes(f"clusters/{cluster}/backups/{backup_id}/{name}", b"x" * size)
        objects.append(stored_object(name, size))
    manifest = Manifest(
        id=backup_id, cluster=cluster, status=BackupStatus(status),
        started_at=started.isoformat(), finished_at=(started + timedelta(minutes=1)).isoformat(),
        tool_version="test", source=SOURCE, snapshot=snapshot_info(), compression="zstd:3", encryption=None,
        recipients=(), objects=tuple(objects),
    )
    if commit:
        repo.commit(manifest)
    return manifest


@pytest.fixture
def repo() -> BackupRepository:
    return BackupRepository.open(MemoryStore(clock=FakeClock(NOW)), create=True)


def stored_ids(repo: BackupRepository) -> set[str]:
    """The ids of the backups any object is stored for."""
    return {name.backup_id for obj in repo.store.list("clusters/") if (name := repo.layout.parse(obj.key))}


def daily(repo: BackupRepository, count: int) -> list[Manifest]:
    """``count`` backups, one a day, the newest a day before NOW; oldest first."""
    return [store_backup(repo, NOW - timedelta(days=count - i)) for i in range(count)]


def test_planning_changes_nothing(repo: BackupRepository) -> None:
    daily(repo, 5)
    store = repo.store
    assert isinstance(store, MemoryStore)
    before, writes = store.keys(), store.calls["put_bytes"] + store.calls["put_stream"]
    plan = plan_prune(repo, [KeepLast(2)], NOW)
    assert len(plan.deletions) == 3
    assert store.keys() == before
    assert store.calls["delete"] == 0
    assert store.calls["put_bytes"] + store.calls["put_stream"] == writes


def test_apply_deletes_exactly_the_delete_verdicts(repo: BackupRepository) -> None:
    backups = daily(repo, 5)
    plan = plan_prune(repo, [KeepLast(2)], NOW)
    result = apply_prune(repo, plan)
    assert result.deleted == [b.id for b in reversed(backups[:3])]
    assert [m.id for m in repo.manifests()] == [b.id for b in backups[3:]]
    assert stored_ids(repo) == {b.id for b in backups[3:]}
    assert result.bytes_freed == 3 * 400


def test_every_backup_gets_a_verdict_with_a_reason(repo: BackupRepository) -> None:
    daily(repo, 3)
    plan = plan_prune(repo, [KeepLast(1)], NOW)
    verdicts = [(d.verdict, d.reason) for d in plan.retention.decisions]
    assert verdicts[0] == (Verdict.KEEP, "kept: newest 1 (keep-last 1)")
    assert all(v == (Verdict.DELETE, "deleted: matched no policy") for v in verdicts[1:])


def test_pinned_backups_survive(repo: BackupRepository) -> None:
    backups = daily(repo, 4)
    repo.pin(backups[0], Pin.now("audit 2026", clock=FakeClock(NOW)))
    apply_prune(repo, plan_prune(repo, [KeepLast(1)], NOW))
    assert [m.id for m in repo.manifests()] == [backups[0].id, backups[3].id]
    pin = repo.pin_of(backups[0])
    assert pin is not None and pin.reason == "audit 2026"


def test_backup_pinned_after_planning_is_not_deleted(repo: BackupRepository) -> None:
    backups = daily(repo, 3)
    plan = plan_prune(repo, [KeepLast(1)], NOW)
    repo.pin(backups[0], Pin.now("late pin"))
    result = apply_prune(repo, plan)
    assert result.skipped == [backups[0].id] and result.deleted == [backups[1].id]
    assert [m.id for m in repo.manifests()] == [backups[0].id, backups[2].id]


def test_deleting_a_backup_removes_its_pin_last_and_a_pin_left_alone_pins_nothing(repo: BackupRepository) -> None:
    """The pin (or a prune's deletion claim) goes after the manifest: while it is there no pin can
    be written for a backup being deleted."""
    backup = daily(repo, 1)[0]
    repo.pin(backup, Pin.now())
    store = repo.store
    assert isinstance(store, MemoryStore)
    pin_key = repo.layout.pin_key(backup.cluster, backup.id)
    store.inject(Fault("delete", key_prefix=pin_key))
    with pytest.raises(RepositoryUnavailable):
        repo.delete(backup)
    assert store.keys() == [pin_key, "lifeboat-repository.json"]
    assert list(repo.manifests()) == [] and repo.committed() == []
    repo.delete(backup)  # re-runnable
    assert store.keys() == ["lifeboat-repository.json"]


def test_old_orphans_are_removed_and_young_ones_kept(repo: BackupRepository) -> None:
    daily(repo, 2)
    old = store_backup(repo, NOW - timedelta(hours=30), commit=False)
    young = store_backup(repo, NOW - timedelta(hours=2), commit=False)
    plan = plan_prune(repo, [KeepLast(5)], NOW, orphan_grace=timedelta(hours=24))
    fates = {o.orphan.backup_id: (o.remove, o.reason) for o in plan.orphans}
    assert fates[old.id] == (True, "no manifest, last written more than 24h ago: left by an interrupted backup")
    assert fates[young.id] == (False, "no manifest, last written less than 24h ago: may still be uploading")
    result = apply_prune(repo, plan)
    assert result.orphans_removed == [old.id] and result.deleted == []
    remaining = stored_ids(repo)
    assert old.id not in remaining and young.id in remaining
    assert len(list(repo.manifests())) == 2


def test_orphan_written_a_moment_ago_is_kept_however_long_ago_its_backup_started(
        repo: BackupRepository) -> None:
    # A long upload: the backup started 30 hours ago, its snapshot became visible a minute ago,
    # and its manifest is about to follow.
    slow = store_backup(repo, NOW - timedelta(hours=30), commit=False)
    clock = repo.store.clock  # type: ignore[attr-defined]
    clock.jump_wall((NOW - timedelta(minutes=1) - clock.now()).total_seconds())
    repo.store.put_bytes(f"clusters/prod/backups/{slow.id}/snapshot.db.zst", b"y" * 300)
    plan = plan_prune(repo, [KeepLast(5)], NOW, orphan_grace=timedelta(hours=1))
    [decision] = plan.orphans
    assert decision.orphan.last_written == NOW - timedelta(minutes=1)
    assert (decision.remove, decision.reason) == (False, "no manifest, last written less than 1h ago: "
                                                         "may still be uploading")
    assert apply_prune(repo, plan).orphans_removed == []


@pytest.mark.parametrize("grace", [timedelta(seconds=1), timedelta(minutes=59)])
def test_orphan_grace_shorter_than_the_safe_minimum_is_refused_saying_why(
        repo: BackupRepository, grace: timedelta) -> None:
    store_backup(repo, NOW - timedelta(hours=30), commit=False)
    with pytest.raises(UsageError, match="shorter than the minimum of 1h.*about to commit"):
        plan_prune(repo, [KeepLast(5)], NOW, orphan_grace=grace)
    assert len(list(repo.store.list("clusters/"))) == 2


def test_objects_outside_lifeboat_ids_are_not_orphans(repo: BackupRepository) -> None:
    repo.store.put_bytes("clusters/prod/backups/not-a-backup/file", b"keep me")
    plan = plan_prune(repo, [KeepLast(1)], NOW)
    assert plan.orphans == ()


def test_interrupted_prune_completes_when_run_again(repo: BackupRepository) -> None:
    backups = daily(repo, 5)
    store = repo.store
    assert isinstance(store, MemoryStore)
    # A delete is two data objects, the pin, the manifest: fail the sixth, and the second
    # doomed backup has lost one object, not its manifest.
    store.inject(Fault("delete", after_calls=5))
    with pytest.raises(RepositoryUnavailable):
        apply_prune(repo, plan_prune(repo, [KeepLast(2)], NOW))
    listed = [m.id for m in repo.manifests()]
    assert backups[2].id not in listed and backups[1].id in listed  # newest doomed went first
    again = plan_prune(repo, [KeepLast(2)], NOW)
    assert [d.backup.id for d in again.deletions] == [backups[1].id, backups[0].id]
    apply_prune(repo, again)
    assert [m.id for m in repo.manifests()] == [b.id for b in backups[3:]]
    assert stored_ids(repo) == {b.id for b in backups[3:]}
    assert plan_prune(repo, [KeepLast(2)], NOW).deletions == ()


def test_plan_that_would_delete_every_backup_is_refused(repo: BackupRepository) -> None:
    daily(repo, 3)
    with pytest.raises(OperationFailed, match="refusing to delete all 3 complete backups"):
        plan_prune(repo, [KeepWithin(timedelta(hours=1))], NOW, min_redundancy=0)
    assert len(list(repo.manifests())) == 3


def test_floor_keeps_the_newest_when_policies_keep_none(repo: BackupRepository) -> None:
    backups = daily(repo, 3)
    apply_prune(repo, plan_prune(repo, [KeepWithin(timedelta(hours=1))], NOW, min_redundancy=1))
    assert [m.id for m in repo.manifests()] == [backups[2].id]


def test_failed_backup_older_than_a_complete_one_is_pruned(repo: BackupRepository) -> None:
    failed = store_backup(repo, NOW - timedelta(days=3), status="failed")
    good = store_backup(repo, NOW - timedelta(days=1))
    plan = plan_prune(repo, [KeepLast(5)], NOW)
    assert [d.backup.id for d in plan.deletions] == [failed.id]
    apply_prune(repo, plan)
    assert [m.id for m in repo.manifests()] == [good.id]


def test_clusters_are_pruned_separately(repo: BackupRepository) -> None:
    prod = [store_backup(repo, NOW - timedelta(days=d), cluster="prod") for d in (3, 2, 1)]
    stage = [store_backup(repo, NOW - timedelta(days=d), cluster="stage") for d in (3, 2)]
    apply_prune(repo, plan_prune(repo, [KeepLast(1)], NOW, cluster="prod"))
    assert [m.id for m in repo.manifests("prod")] == [prod[2].id]
    assert [m.id for m in repo.manifests("stage")] == [b.id for b in stage]


def test_a_damaged_pin_keeps_its_backup_and_stops_neither_listing_nor_pruning(repo: BackupRepository) -> None:
    backups = daily(repo, 3)
    key = repo.layout.pin_key("prod", backups[0].id)
    repo.store.put_bytes(key, b'{"pinned_at": 3')  # truncated
    assert [m.id for m in repo.scan().backups] == [b.id for b in backups]
    pin = repo.pin_of(backups[0])
    assert pin is not None and key in pin.reason and "still treated as pinned" in pin.reason
    plan = plan_prune(repo, [KeepLast(1)], NOW)
    assert {d.backup.id: d.verdict for d in plan.retention.decisions}[backups[0].id] is Verdict.KEEP
    assert apply_prune(repo, plan).deleted == [backups[1].id]
    assert repo.unpin(backups[0]) and repo.pin_of(backups[0]) is None


@pytest.mark.parametrize("name", ["../../manifests/x", "a/b", ".", "snapshot\x1b[2J"])
def test_a_manifest_naming_an_object_by_a_path_is_damaged_and_stops_no_prune(
        repo: BackupRepository, name: str) -> None:
    """A manifest listing an object named `../../manifests/x` was read as a good backup: every
    prune (and `list --check`, `verify`) then failed with exit 3, 'invalid object key'."""
    backups = daily(repo, 3)
    key = repo.manifest_key(backups[2])
    doc = json.loads(repo.store.get_bytes(key))
    doc["objects"].append({**doc["objects"][0], "name": name})
    repo.store.put_bytes(key, json.dumps(doc).encode())
    scanned = repo.scan()
    assert [d.id for d in scanned.damaged] == [backups[2].id] and "objects[2].name" in scanned.damaged[0].reason
    plan = plan_prune(repo, [KeepLast(1)], NOW)
    assert apply_prune(repo, plan).deleted == [backups[0].id]
    assert repo.read_manifest("prod", backups[2].id) is not None  # a damaged backup is the operator's to delete


class PendingUploadsStore(MemoryStore):
    """A memory store that also holds unfinished multipart uploads, as S3 does after a kill -9."""

    def __init__(self, uploads: list[IncompleteUpload] | None, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.uploads = uploads
        self.asked: list[str] = []
        self.aborted: list[str] = []

    def incomplete_uploads(self, prefix: str = "") -> list[IncompleteUpload]:
        self.asked.append(prefix)
        if self.uploads is None:
            raise Unsupported("S3 bucket b does not support listing multipart uploads (NotImplemented)")
        return [u for u in self.uploads if u.name.startswith(prefix) and u.upload_id not in self.aborted]

    def remove_incomplete(self, upload: IncompleteUpload) -> None:
        self.aborted.append(upload.upload_id)


def test_a_multipart_upload_idle_past_the_grace_is_aborted_and_a_live_one_kept() -> None:
    stale = IncompleteUpload("clusters/prod/backups/x/snapshot.db.zst", 10 << 20, NOW - timedelta(hours=2), "old")
    live = IncompleteUpload("clusters/prod/backups/y/snapshot.db.zst", 5 << 20, NOW - timedelta(minutes=50), "new")
    store = PendingUploadsStore([stale, live], FakeClock(NOW))
    repo = BackupRepository.open(store, create=True)
    daily(repo, 1)

    plan = plan_prune(repo, [KeepLast(5)], NOW, orphan_grace=timedelta(hours=1))

    assert store.asked == ["clusters/"]  # only the repository's own objects, never the whole bucket
    assert [(i.upload.upload_id, i.remove) for i in plan.incomplete] == [("old", True), ("new", False)]
    assert plan.incomplete[0].as_dict()["kind"] == "multipart upload"
    result = apply_prune(repo, plan)
    assert store.aborted == ["old"] and result.uploads_aborted == 1
    assert result.incomplete_removed == [stale.name] and result.bytes_freed == 10 << 20


def test_a_store_that_cannot_list_uploads_still_prunes_and_says_why() -> None:
    repo = BackupRepository.open(PendingUploadsStore(None, FakeClock(NOW)), create=True)
    backups = daily(repo, 3)
    plan = plan_prune(repo, [KeepLast(1)], NOW)
    assert not plan.incomplete_listed and "NotImplemented" in plan.incomplete_unlisted
    assert sorted(apply_prune(repo, plan).deleted) == [backups[0].id, backups[1].id]


@pytest.mark.parametrize("damage", ["missing", "cut short"])
def test_a_kept_backup_that_lost_an_object_does_not_count_and_the_restorable_ones_stay(
        repo: BackupRepository, damage: str) -> None:
    """keep-last 1 with the newest backup's snapshot gone: the newest cannot be restored, so it
    is not the one kept; the next newest is, and nothing restorable is deleted for it."""
    backups = daily(repo, 3)
    key = f"clusters/prod/backups/{backups[-1].id}/snapshot.db.zst"
    if damage == "missing":
        repo.store.delete(key)
    else:
        repo.store.put_bytes(key, b"x" * 10)
    plan = plan_prune(repo, [KeepLast(1)], NOW)
    verdicts = {d.backup.id: d.verdict for d in plan.retention.decisions}
    assert verdicts[backups[1].id] is Verdict.KEEP, "the newest restorable backup is kept"
    assert [d.backup.id for d in plan.deletions] == [backups[0].id]
    damaged = next(d for d in plan.retention.decisions if d.backup.id == backups[-1].id)
    # Its manifest says complete: not "may still be running", and not deleted once the grace is over.
    assert damaged.reasons[0].startswith("damaged: objects its manifest lists are missing"), damaged.reasons
    assert f"lifeboat verify {backups[-1].id}" in damaged.reasons[0]
    apply_prune(repo, plan)
    assert {m.id for m in repo.manifests()} == {backups[1].id, backups[2].id}, \
        "the damaged newest is not deleted either (newer than every restorable one)"
    assert next(d for d in plan_prune(repo, [KeepLast(1)], NOW + timedelta(days=3)).retention.decisions
                if d.backup.id == backups[-1].id).verdict is Verdict.KEEP, "not deleted once the grace is over"


def test_a_kept_backup_whose_manifest_rotted_behind_the_cache_does_not_count(
        repo: BackupRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest cache knows a local manifest by its inode and mtime: one damaged in place
    (a flipped bit) was still served as whole, and keep-last 1 kept only it, deleting the rest."""
    backups = daily(repo, 3)
    listed = repo.scan("prod")  # as the cache keeps it
    monkeypatch.setattr(BackupRepository, "scan", lambda self, cluster=None, **kw: listed)
    repo.store.put_bytes(repo.manifest_key(backups[-1]), b'{"id": "rotted')
    plan = plan_prune(repo, [KeepLast(1)], NOW, cluster="prod")
    verdicts = {d.backup.id: d.verdict for d in plan.retention.decisions}
    assert verdicts[backups[1].id] is Verdict.KEEP, "the newest restorable backup is kept"
    assert [d.backup.id for d in plan.deletions] == [backups[0].id]


def test_the_kept_backups_are_checked_several_at_once(repo: BackupRepository,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """One manifest GET and a HEAD per object for each kept backup, one after another: 2,000
    kept backups took 3.6 s from a local SeaweedFS, minutes from a distant S3."""
    import threading

    backups = daily(repo, 8)
    together = threading.Barrier(4, timeout=5)
    read_manifest = BackupRepository.read_manifest

    def read_with_others(self: BackupRepository, cluster: str, backup_id: str) -> object:
        together.wait()  # broken (an error) unless four reads are under way at once
        return read_manifest(self, cluster, backup_id)

    monkeypatch.setattr(BackupRepository, "read_manifest", read_with_others)
    plan = plan_prune(repo, [KeepLast(8)], NOW)
    assert {d.backup.id for d in plan.retention.decisions if d.verdict is Verdict.KEEP} == {b.id for b in backups}
