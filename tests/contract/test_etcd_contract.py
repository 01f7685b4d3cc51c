"""The etcd seam (lifeboat.etcd.seam), run against the in-memory double and a real etcd 3.5.1.

Whatever a unit test learns from MemoryEtcd must hold for a live etcd: each behaviour here
runs on both. Tests read the current revision first, so they share one real cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from lifeboat.clock import FakeClock

from lifeboat.etcd import Compare, ConnectionSettings, Delete, EtcdClient, EventType, Get, Put, RevisionCompacted, Target
from lifeboat.etcd.memory import MemoryEtcd
from lifeboat.etcd.seam import Etcd
from tests.support.binaries import EtcdRelease
from tests.support.etcd import EtcdCluster


@pytest.fixture(scope="module")
def real_cluster(release35: EtcdRelease, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(release35, tmp_path_factory.mktemp("etcd-contract")) as cluster:
        yield cluster


@pytest.fixture(params=["memory", pytest.param("etcd-3.5", marks=pytest.mark.integration)])
def etcd(request: pytest.FixtureRequest) -> Iterator[Etcd]:
    if request.param == "memory":
        yield MemoryEtcd()
        return
    cluster: EtcdCluster = request.getfixturevalue("real_cluster")
    with EtcdClient(ConnectionSettings(tuple(cluster.endpoints))) as client:
        yield client


@pytest.fixture(params=["memory", pytest.param("etcd-3.5", marks=pytest.mark.integration)])
def clocked(request: pytest.FixtureRequest) -> Iterator[tuple[MemoryEtcd | EtcdClient, FakeClock]]:
    """An etcd whose clock a test moves: the double's own, or the live client's."""
    clock = FakeClock(datetime(2026, 12, 1, 3, 0, tzinfo=UTC))
    if request.param == "memory":
        yield MemoryEtcd(clock), clock
        return
    cluster: EtcdCluster = request.getfixturevalue("real_cluster")
    with EtcdClient(ConnectionSettings(tuple(cluster.endpoints)), clock) as client:
        yield client, clock


def now(etcd: Etcd) -> int:
    return etcd.range(b"/contract-none").revision


def test_every_write_is_one_revision_and_old_revisions_stay_readable(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    key = f"/c/{request.node.name}/k".encode()
    first = etcd.put(key, b"one")
    second = etcd.put(key, b"two")
    assert second == first + 1
    kv = etcd.get(key)
    assert kv is not None and (kv.value, kv.version, kv.create_revision, kv.mod_revision) == (b"two", 2, first, second)
    old = etcd.get(key, revision=first)
    assert old is not None and old.value == b"one"


def test_deleting_nothing_writes_no_revision(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    prefix = f"/c/{request.node.name}/"
    before = now(etcd)
    assert etcd.delete_range(prefix + "absent") == 0
    assert now(etcd) == before
    etcd.put(prefix + "a", b"1")
    etcd.put(prefix + "b", b"2")
    assert etcd.delete_range(prefix, prefix=True) == 2
    assert now(etcd) == before + 3


def test_a_txn_is_atomic_at_one_revision_and_a_failed_compare_runs_the_other_branch(
    etcd: Etcd, request: pytest.FixtureRequest,
) -> None:
    prefix = f"/c/{request.node.name}/"
    before = now(etcd)
    done = etcd.txn([Compare(prefix + "a", Target.VERSION, "==", 0)],
                    [Put(prefix + "a", b"1"), Put(prefix + "b", b"2"), Get(prefix, prefix + "\xff")])
    assert done.succeeded and done.revision == before + 1
    assert [kv.key for kv in done.outcomes[2].kvs] == [(prefix + "a").encode(), (prefix + "b").encode()]  # type: ignore[union-attr]
    again = etcd.txn([Compare(prefix + "a", Target.VERSION, "==", 0)], [Put(prefix + "a", b"x")],
                     [Delete(prefix + "b")])
    assert not again.succeeded and again.revision == before + 2
    assert etcd.get(prefix + "b") is None and etcd.put_if_absent(prefix + "a", b"y") is False


def test_pages_read_one_view_at_the_first_pages_revision(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    prefix = f"/c/{request.node.name}/"
    for i in range(5):
        etcd.put(f"{prefix}{i}", b"v")
    page = etcd.range(prefix, prefix=True, limit=2)
    assert page.more and page.count == 5 and len(page.kvs) == 2
    pages = etcd.range_pages(prefix, prefix=True, page_size=2)
    first = next(pages)
    etcd.put(f"{prefix}9", b"late")
    assert [kv.key[-1:] for kv in first.kvs] + [kv.key[-1:] for p in pages for kv in p.kvs] == [b"0", b"1", b"2", b"3", b"4"]


def test_a_watch_from_a_past_revision_replays_puts_and_deletes_in_order(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    prefix = f"/c/{request.node.name}/"
    start = etcd.put(prefix + "a", b"1")
    etcd.put(prefix + "b", b"2")
    etcd.put("/elsewhere", b"not watched")
    etcd.delete_range(prefix + "a")
    with etcd.watch(prefix, prefix=True, start_revision=start, prev_kv=True) as watch:
        events = [watch.next_event(5) for _ in range(3)]
        assert watch.next_event(0.2) is None
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events if e] == [
        (EventType.PUT, (prefix + "a").encode(), start),
        (EventType.PUT, (prefix + "b").encode(), start + 1),
        (EventType.DELETE, (prefix + "a").encode(), start + 3),
    ]
    deleted = events[2]
    assert deleted is not None and deleted.prev_kv is not None and deleted.prev_kv.value == b"1"


def test_a_watch_sees_what_is_written_after_it_started(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    key = f"/c/{request.node.name}/k"
    with etcd.watch(key) as watch:
        written = etcd.put(key, b"new")
        event = watch.next_event(5)
    assert event is not None and event.kv.mod_revision == written and event.kv.value == b"new"


def test_reads_and_watches_before_a_compaction_are_refused(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    key = f"/c/{request.node.name}/k"
    old = etcd.put(key, b"1")
    newer = etcd.put(key, b"2")
    etcd.compact(newer)
    with pytest.raises(RevisionCompacted):
        etcd.get(key, revision=old)
    kv = etcd.get(key, revision=newer)
    assert kv is not None and kv.value == b"2"
    with pytest.raises(RevisionCompacted):
        with etcd.watch(key, start_revision=old) as watch:
            watch.next_event(5)
    with etcd.watch(key, start_revision=newer) as watch:
        event = watch.next_event(5)
    assert event is not None and event.kv.mod_revision == newer


def test_revoking_a_lease_deletes_its_keys_in_one_revision(etcd: Etcd, request: pytest.FixtureRequest) -> None:
    prefix = f"/c/{request.node.name}/"
    lease = etcd.lease_grant(60)
    etcd.put(prefix + "a", b"1", lease=lease)
    etcd.put(prefix + "b", b"2", lease=lease)
    # etcd lists a lease's keys in no particular order.
    assert sorted(etcd.lease_time_to_live(lease, keys=True).keys) == [(prefix + "a").encode(), (prefix + "b").encode()]
    before = now(etcd)
    with etcd.watch(prefix, prefix=True) as watch:
        etcd.lease_revoke(lease)
        events = [watch.next_event(5) for _ in range(2)]
    assert [(e.type, e.kv.mod_revision) for e in events if e] == [(EventType.DELETE, before + 1)] * 2
    assert etcd.range(prefix, prefix=True).count == 0
    assert etcd.lease_time_to_live(lease).ttl == -1
    assert etcd.lease_keepalive_once(lease) <= 0


def test_member_list_and_status_describe_the_same_cluster(etcd: Etcd) -> None:
    members = etcd.member_list()
    endpoint = members.members[0].client_urls[0]
    status = etcd.status(endpoint)
    assert status.cluster_id == members.cluster_id and status.member_id == members.members[0].id
    assert status.is_leader and etcd.alarms() == []


def test_a_followed_response_is_stamped_with_the_clock_when_it_arrived(
        clocked: tuple[MemoryEtcd | EtcdClient, FakeClock], request: pytest.FixtureRequest) -> None:
    etcd, clock = clocked
    key = f"/c/{request.node.name}/k".encode()
    written = etcd.put(key, b"1")
    clock.advance(90)
    feed = etcd.follow(written)
    try:
        arrived = feed.take(timeout=30)  # from the written revision: that write comes first
    finally:
        feed.close()
    assert arrived and arrived[0].events[0].kv.mod_revision == written
    assert arrived[0].received == datetime(2026, 12, 1, 3, 1, 30, tzinfo=UTC).timestamp()
