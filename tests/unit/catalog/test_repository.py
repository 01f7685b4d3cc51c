from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from lifeboat.catalog.ids import is_backup_id, new_backup_id
from lifeboat.catalog.layout import MARKER_KEY, backup_prefix
from lifeboat.catalog.manifest import BackupStatus, Manifest
from lifeboat.catalog.pins import Pin
from lifeboat.catalog.records import MANIFEST_MAX, SMALL_RECORD_MAX
from lifeboat.catalog.repository import BackupRepository
from lifeboat.clock import FakeClock
from lifeboat.errors import (
    AlreadyExists, IntegrityError, NotFound, OperationFailed, RepositoryUnavailable, UsageError,
)
from lifeboat.store.memory import Fault, MemoryStore
from tests.support.manifests import SOURCE, snapshot_info, stored_object

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)


def manifest(backup_id: str, cluster: str = "prod", status: str = "complete") -> Manifest:
    return Manifest(
        id=backup_id, cluster=cluster, status=BackupStatus(status),
        started_at="2026-11-22T03:00:00Z", finished_at="2026-11-22T03:00:09Z", tool_version="0.1.0",
        source=SOURCE, snapshot=snapshot_info(10, 99), compression="zstd:1",
        encryption=None, recipients=(), objects=(stored_object(),),
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
    with pytest.raises(RepositoryUnavailable, match="no lifeboat repository"):
        BackupRepository.open(store)
    BackupRepository.open(store, create=True)
    marker = json.loads(store.get_bytes(MARKER_KEY))
    assert marker["format"] == "lifeboat-repository" and marker["version"] == 2
    BackupRepository.open(store)  # and now it opens without create


def test_the_marker_and_a_pin_are_stamped_by_the_repository_clock() -> None:
    clock = FakeClock(datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc))
    store = MemoryStore()
    BackupRepository.open(store, create=True, clock=clock)
    assert json.loads(store.get_bytes(MARKER_KEY))["created_at"] == "2026-03-04T05:06:07+00:00"
    clock.advance(60)
    assert Pin.now("audit", clock=clock).pinned_at == "2026-03-04T05:07:07+00:00"


def test_a_foreign_non_empty_store_is_refused() -> None:
    store = MemoryStore()
    store.put_bytes("someone-elses/file", b"data")
    with pytest.raises(UsageError, match="not empty"):
        BackupRepository.open(store, create=True)


def test_a_newer_format_is_refused() -> None:
    store = MemoryStore()
    store.put_bytes(MARKER_KEY, json.dumps({"format": "lifeboat-repository", "version": 3}).encode())
    with pytest.raises(UsageError, match="upgrade lifeboat"):
        BackupRepository.open(store)


@pytest.mark.parametrize("version", ["true", "1.9", "1e400", '"2"'])
def test_a_marker_whose_version_is_not_a_json_integer_is_refused(version: str) -> None:
    # int() read true and 1.9 as format 1 (a format-2 repository then looked empty) and 1e400 crashed.
    store = MemoryStore()
    store.put_bytes(MARKER_KEY, b'{"format": "lifeboat-repository", "version": %s}' % version.encode())
    with pytest.raises(UsageError, match="not a lifeboat marker"):
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


class ReadCountingStore(MemoryStore):
    """Counts the bytes every read returned."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_read = 0

    def get_bytes(self, key: str) -> bytes:
        data = super().get_bytes(key)
        self.bytes_read += len(data)
        return data

    def get_range(self, key: str, start: int, end: int) -> bytes:
        data = super().get_range(key, start, end)
        self.bytes_read += len(data)
        return data


def padded(record: bytes, size: int) -> bytes:
    """``record`` made ``size`` bytes long with JSON whitespace: still a valid record when read whole."""
    return record + b" " * (size - len(record))


def test_a_record_larger_than_any_real_one_is_damaged_and_not_read_whole() -> None:
    """A planted 2 GB "manifest" made list/prune/timeline read it all into memory (a manifest,
    pin or chain record was read whole, whatever its size)."""
    store = ReadCountingStore()
    repo = BackupRepository.open(store, create=True)
    big, small = (stored(repo, manifest(new_backup_id(T0 + timedelta(hours=h)))) for h in (0, 1))
    repo.pin(small, Pin.now("keep"))
    key = repo.manifest_key(big)
    store.put_bytes(key, padded(big.to_json(), MANIFEST_MAX + 4096), create_only=False)
    pin_key = repo.layout.pin_key(small.cluster, small.id)
    store.put_bytes(pin_key, padded(Pin.now("keep").to_json(), SMALL_RECORD_MAX + 4096))
    store.bytes_read = 0
    listing = repo.scan()
    assert [m.id for m in listing.backups] == [small.id]
    [damaged] = listing.damaged
    assert damaged.id == big.id and f"larger than {MANIFEST_MAX:,} bytes" in damaged.reason
    # A pin that size still pins its backup, as a damaged pin does.
    pin = listing.pins[("prod", small.id)]
    assert pin.pinned_by == "unknown" and "larger than" in pin.reason and "still treated as pinned" in pin.reason
    assert store.bytes_read <= MANIFEST_MAX + SMALL_RECORD_MAX + 2 + 64 * 1024
    with pytest.raises(IntegrityError, match="larger than"):
        repo.find(big.id)
    # The repository marker too: read no further than the cap, and refused.
    store.put_bytes(MARKER_KEY, padded(store.get_bytes(MARKER_KEY), SMALL_RECORD_MAX + 4096))
    store.bytes_read = 0
    with pytest.raises(IntegrityError, match="repository marker .* larger than"):
        BackupRepository.open(store)
    assert store.bytes_read <= SMALL_RECORD_MAX + 1


def test_a_malformed_manifest_is_listed_as_damaged_and_refused_by_id() -> None:
    repo = BackupRepository.open(MemoryStore(), create=True)
    backup_id = new_backup_id(T0)
    key = repo.layout.manifest_key("prod", backup_id)
    repo.store.put_bytes(key, b'{"format": 1, "id": 3}')
    assert list(repo.manifests()) == []
    [damaged] = repo.scan().damaged
    assert (damaged.cluster, damaged.id, damaged.key) == ("prod", backup_id, key)
    assert key in damaged.reason and "id: must be a string" in damaged.reason
    with pytest.raises(IntegrityError, match=f"{key}.*damaged.*lifeboat delete {backup_id}"):
        repo.find(backup_id)


def stored_document(repo: BackupRepository, m: Manifest) -> dict[str, object]:
    document = json.loads(repo.store.get_bytes(repo.manifest_key(m)))
    assert isinstance(document, dict)
    return document


def rewrite(repo: BackupRepository, m: Manifest, document: object) -> str:
    key = repo.manifest_key(m)
    repo.store.delete(key)
    repo.store.put_bytes(key, json.dumps(document).encode())
    return key


@pytest.mark.parametrize(("damage", "field", "problem"), [
    (lambda d: d["snapshot"].update(revision="eighty"), "snapshot.revision", "must be an integer, got 'eighty'"),
    (lambda d: d["objects"][0].update(size=-5), "objects[0].size", "greater than or equal to 0, got -5"),
    (lambda d: d.update(status="half-done"), "status", "must be one of 'complete' or 'failed'"),
    (lambda d: d.pop("source"), "source", "is missing"),
    (lambda d: d["source"].update(raft_term="2"), "source.raft_term", "must be an integer"),
    (lambda d: d.update(started_at="yesterday"), "started_at", "RFC 3339"),
    (lambda d: d["objects"][0].update(sha256="not hex"), "objects[0].sha256", "should match pattern"),
    (lambda d: d.update(format=2), "format", "got 2"),
    (lambda d: d.update(encryption="rot13"), "encryption", "got 'rot13'"),
    (lambda d: d.update(objects=[]), "the document", "objects: names no snapshot.db object"),
])
def test_wrong_types_in_a_manifest_are_rejected_naming_the_object_and_field(
        damage: object, field: str, problem: str) -> None:
    repo = BackupRepository.open(MemoryStore(), create=True)
    m = stored(repo, manifest(new_backup_id(T0)))
    document = stored_document(repo, m)
    assert callable(damage)
    damage(document)
    key = rewrite(repo, m, document)
    with pytest.raises(IntegrityError) as caught:
        repo.find(m.id)
    message = str(caught.value)
    assert key in message and f"{field}: " in message and problem in message
    assert "\n" not in message


def test_one_damaged_manifest_leaves_the_rest_of_the_cluster_usable() -> None:
    repo = BackupRepository.open(MemoryStore(), create=True)
    old = stored(repo, manifest(new_backup_id(T0)))
    good = stored(repo, manifest(new_backup_id(T0 + timedelta(hours=1))))
    newest = stored(repo, manifest(new_backup_id(T0 + timedelta(hours=2))))
    key = repo.manifest_key(old)
    data = repo.store.get_bytes(key)
    repo.store.delete(key)
    repo.store.put_bytes(key, data[: len(data) // 2])  # truncated
    rewrite(repo, newest, {**stored_document(repo, newest), "status": 7})

    listing = repo.scan("prod")
    assert [m.id for m in listing.backups] == [good.id]
    assert [d.id for d in listing.damaged] == [old.id, newest.id]
    assert "not valid JSON" in listing.damaged[0].reason
    assert repo.find("latest").id == good.id  # the newest is damaged: skipped
    assert repo.find(good.id) == good
    damaged = repo.locate(old.id)
    repo.delete(damaged)
    assert not list(repo.store.list(backup_prefix("prod", old.id)))
    assert repo.store.stat(repo.manifest_key(old)) is None
    assert [d.id for d in repo.scan().damaged] == [newest.id]


def test_manifest_stored_under_another_backup_id_is_damaged() -> None:
    repo = BackupRepository.open(MemoryStore(), create=True)
    m = stored(repo, manifest(new_backup_id(T0)))
    other = new_backup_id(T0 + timedelta(hours=1))
    repo.store.put_bytes(repo.layout.manifest_key("prod", other), m.to_json())
    assert [d.id for d in repo.scan().damaged] == [other]
    assert [b.id for b in repo.scan().backups] == [m.id]


def test_manifest_round_trips_through_its_schema() -> None:
    m = manifest(new_backup_id(T0))
    assert Manifest.from_json(m.to_json(), where="x") == m
    assert json.loads(m.to_json())["status"] == "complete"


class RecordingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []

    def delete(self, key: str) -> None:
        super().delete(key)
        self.deleted.append(key)


def test_delete_removes_data_first_then_the_manifest_and_its_pin_last() -> None:
    store = RecordingStore()
    repo = BackupRepository.open(store, create=True)
    m = stored(repo, manifest(new_backup_id(T0)))
    repo.delete(m)
    assert store.deleted[-2:] == [repo.manifest_key(m), repo.layout.pin_key(m.cluster, m.id)]
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


# --- reads that scale with what is asked -------------------------------------------------

HALF_HOURLY = 1000  # three weeks of backups every 30 minutes


def half_hourly(store: MemoryStore, count: int = HALF_HOURLY, cluster: str = "prod") -> list[Manifest]:
    """``count`` backups every 30 minutes, the newest started at T0; the store's counters reset."""
    repo = BackupRepository.open(store, create=True)
    made = [stored(repo, manifest(new_backup_id(T0 - timedelta(minutes=30 * i)), cluster))
            for i in reversed(range(count))]
    store.calls.clear()
    store.listed = 0
    return made


def repository_at(store: MemoryStore, now: datetime) -> BackupRepository:
    """The repository as a command opens it at ``now``; the store's counters start afresh."""
    repo = BackupRepository.open(store, clock=FakeClock(now))
    store.calls.clear()
    store.listed = 0
    return repo


def test_latest_reads_one_manifest_and_lists_only_recent_keys() -> None:
    store = MemoryStore()
    made = half_hourly(store)
    repo = repository_at(store, T0 + timedelta(minutes=10))

    assert repo.find("latest") == made[-1]
    assert repo.find("latest", "prod") == made[-1]
    assert store.calls["get_range"] == 2  # one manifest each time, of 1,000
    assert store.listed <= 2 * 2 * 2 * 48  # two days of backups (manifest + data object), twice


def test_latest_passes_over_newer_damaged_and_failed_backups_reading_only_those() -> None:
    store = MemoryStore()
    made = half_hourly(store)
    repo = repository_at(store, T0)
    damaged = made[-1]
    rewrite(repo, damaged, {**stored_document(repo, damaged), "status": 7})
    failed = stored(repo, manifest(new_backup_id(T0 + timedelta(minutes=1)), status="failed"))
    store.calls.clear()

    assert repo.find("latest") == made[-2]
    assert store.calls["get_range"] == 3
    assert failed.id > damaged.id > made[-2].id


def test_latest_widens_its_search_when_recent_days_hold_no_complete_backup() -> None:
    store = MemoryStore()
    made = half_hourly(store, 100)
    repo = repository_at(store, T0 + timedelta(days=400))  # nothing for a year: still found

    assert repo.find("latest") == made[-1]
    assert store.calls["get_range"] == 1
    with pytest.raises(NotFound, match="no complete backup of cluster dev"):
        repo.find("latest", "dev")


def test_latest_finds_a_backup_whose_id_is_ahead_of_this_clock() -> None:
    store = MemoryStore()
    made = half_hourly(store, 10)
    assert repository_at(store, T0 - timedelta(days=30)).find("latest") == made[-1]


def test_a_backup_asked_for_by_id_is_one_read_of_its_manifest() -> None:
    store = MemoryStore()
    made = half_hourly(store)
    half_hourly_dev = half_hourly(store, 3, cluster="dev")
    repo = repository_at(store, T0)

    assert repo.find(made[10].id, "prod") == made[10]
    assert store.calls["get_range"] == 1 and store.calls["list"] == 0
    assert repo.find(made[500].id) == made[500]  # no cluster given: one read in each cluster
    assert store.calls["get_range"] == 3 and store.calls["folders"] == 1 and store.calls["list"] == 0
    assert repo.find(half_hourly_dev[0].id) == half_hourly_dev[0]


def test_listing_the_last_backups_or_those_since_a_time_reads_only_their_manifests() -> None:
    store = MemoryStore()
    made = half_hourly(store)
    repo = repository_at(store, T0)

    assert [m.id for m in repo.scan(last=5).backups] == [m.id for m in made[-5:]]
    assert store.calls["get_range"] == 5
    store.calls.clear()
    store.listed = 0
    assert [m.id for m in repo.scan(since=T0 - timedelta(hours=2)).backups] == [m.id for m in made[-5:]]
    assert store.calls["get_range"] == 5 and store.listed == 5  # their manifests' keys only
    assert repo.scan(since=T0 + timedelta(seconds=1)).backups == ()


def test_listing_the_last_backups_lists_only_recent_keys_and_widens_when_they_are_too_few() -> None:
    store = MemoryStore()
    made = half_hourly(store)  # 1,000 backups, a manifest and a data object each
    repo = repository_at(store, T0 + timedelta(minutes=10))

    assert [m.id for m in repo.scan(last=20).backups] == [m.id for m in made[-20:]]
    assert store.listed <= 2 * 48 and store.calls["list"] == 2  # the last two days' manifests and pins
    store.listed = 0
    assert [m.id for m in repo.scan(last=300).backups] == [m.id for m in made[-300:]]
    assert store.listed <= 2 * 48 + 40 * 48  # two days, then forty
    store.listed = 0
    assert [m.id for m in repo.scan(last=5000).backups] == [m.id for m in made]
    assert store.calls["get_range"] == 20 + 300 + 1000
    # Since a time within the first window: one listing (manifests, pins) from that time,
    # however many are asked.
    store.calls.clear()
    store.listed = 0
    assert [m.id for m in repo.scan(last=50, since=T0 - timedelta(hours=2)).backups] == [m.id for m in made[-5:]]
    assert store.calls["list"] == 2 and store.listed == 5


def test_the_last_backups_are_found_however_far_back_or_ahead_of_this_clock_they_lie() -> None:
    store = MemoryStore()
    made = half_hourly(store, 30)
    ahead = stored(BackupRepository.open(store), manifest(new_backup_id(T0 + timedelta(days=900))))
    for now in (T0 + timedelta(days=400), T0 - timedelta(days=30)):
        repo = repository_at(store, now)
        assert [m.id for m in repo.scan(last=3).backups] == [m.id for m in made[-2:]] + [ahead.id]


def test_a_full_listing_comes_in_pages_oldest_first_with_damaged_manifests_and_pins() -> None:
    store = MemoryStore()
    made = half_hourly(store, 60)
    repo = repository_at(store, T0)
    rewrite(repo, made[3], {**stored_document(repo, made[3]), "status": 7})
    repo.pin(made[7], Pin("2026-11-22T03:00:00+00:00", "ops@node", "audit"))

    pages = list(repo.pages(page_size=25))
    assert [len(p.backups) + len(p.damaged) for p in pages] == [25, 25, 10]
    assert [m.id for p in pages for m in p.backups] == [m.id for i, m in enumerate(made) if i != 3]
    assert [d.id for d in pages[0].damaged] == [made[3].id]
    assert pages[0].pins == {("prod", made[7].id): Pin("2026-11-22T03:00:00+00:00", "ops@node", "audit")}
    assert repo.scan().pins == pages[0].pins


@pytest.mark.parametrize(("tamper", "problem"), [
    (lambda store, key: store.delete(key), "snapshot.db.zst of backup .* is missing"),
    (lambda store, key: store.put_bytes(key, b"x" * 7), "snapshot.db.zst of backup .* holds 7 bytes, not 100"),
])
def test_commit_refuses_a_manifest_whose_objects_are_gone_or_changed(tamper: object, problem: str) -> None:
    repo = BackupRepository.open(MemoryStore(), create=True)
    m = manifest(new_backup_id(T0))
    key = repo.object_key(m, "snapshot.db.zst")
    repo.store.put_bytes(key, b"x" * 100)
    assert callable(tamper)
    tamper(repo.store, key)
    with pytest.raises(OperationFailed, match=f"{problem}.*not committed"):
        repo.commit(m)
    assert repo.store.stat(repo.manifest_key(m)) is None
    assert list(repo.manifests()) == []



def test_commit_refuses_a_manifest_that_would_not_read_back() -> None:
    """Text that is no UTF-8 (a file name or label the OS gave as bytes) made a manifest that
    JSON readers refuse: the backup said it committed, and was damaged for every later command."""
    repo = BackupRepository.open(MemoryStore(), create=True)
    m = manifest(new_backup_id(T0)).model_copy(update={"labels": {"site": "caf\udce9"}})
    repo.store.put_bytes(repo.object_key(m, "snapshot.db.zst"), b"x" * 100)
    with pytest.raises(OperationFailed, match=f"manifest of backup {m.id} would not read back.*not committed"):
        repo.commit(m)
    assert repo.store.stat(repo.manifest_key(m)) is None


class _MarkerWrittenBetweenReadAndList(MemoryStore):
    """Another agent creates the repository right after this one found no marker."""

    raced = False

    def get_range(self, key: str, start: int, end: int) -> bytes:
        try:
            return super().get_range(key, start, end)
        except NotFound:
            if key == MARKER_KEY and not self.raced:
                self.raced = True
                self.put_bytes(MARKER_KEY, json.dumps(
                    {"format": "lifeboat-repository", "version": 1}).encode(), create_only=True)
            raise


def test_two_openers_creating_one_repository_at_once_both_succeed() -> None:
    store = _MarkerWrittenBetweenReadAndList()
    BackupRepository.open(store, create=True)
    assert store.raced
    assert json.loads(store.get_bytes(MARKER_KEY))["format"] == "lifeboat-repository"


def test_a_backup_asked_for_in_the_wrong_cluster_is_said_to_be_anothers() -> None:
    """`show ID --cluster b` of a backup of cluster a said only "not found"."""
    repo = BackupRepository.open(MemoryStore(), create=True)
    held = stored(repo, manifest(new_backup_id(T0), cluster="a"))
    stored(repo, manifest(new_backup_id(T0 + timedelta(hours=1)), cluster="b"))
    with pytest.raises(NotFound, match=f"backup {held.id} not found in .* for cluster b; it is a backup of cluster a$"):
        repo.find(held.id, "b")
    with pytest.raises(NotFound, match=r"\(see 'lifeboat list'\)$"):
        repo.find(new_backup_id(T0 - timedelta(days=1)), "b")
    assert repo.find(held.id, "a") == held


def test_latest_of_backups_started_in_one_second_is_the_one_started_last_as_prune_orders_them() -> None:
    """Ids tell the second only: `latest` took the larger random suffix, prune the later start,
    so `restore latest` chose the backup `prune --keep-last 1` deletes."""
    repo = BackupRepository.open(MemoryStore(), create=True)
    later = stored(repo, manifest("20261122T030000Z-000001").model_copy(update={"started_at": "2026-11-22T03:00:00.900Z"}))
    stored(repo, manifest("20261122T030000Z-ffffff").model_copy(update={"started_at": "2026-11-22T03:00:00.100Z"}))
    stored(repo, manifest("20261122T025959Z-ffffff").model_copy(update={"started_at": "2026-11-22T02:59:59.990Z"}))
    assert repo.find("latest").id == later.id
