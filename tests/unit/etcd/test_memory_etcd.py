"""What only the in-memory etcd can show quickly: lease expiry on a fake clock, members, faults.

The behaviours it shares with a live etcd are in tests/contract/test_etcd_contract.py.
"""

from __future__ import annotations

import threading

import pytest

from lifeboat.clock import FakeClock
from lifeboat.errors import EtcdUnavailable, OperationFailed
from lifeboat.etcd import EventType, RevisionCompacted
from lifeboat.etcd.memory import Fault, MemoryEtcd, member_urls


def test_an_expired_lease_takes_its_keys_and_watchers_see_them_go() -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock)
    lease = etcd.lease_grant(10)
    written = etcd.put("/leader", b"me", lease=lease)
    watch = etcd.watch("/leader")
    clock.advance(9)
    assert etcd.lease_keepalive_once(lease) == 10
    clock.advance(9.5)
    assert etcd.get("/leader") is not None
    clock.advance(1)
    assert etcd.get("/leader") is None
    event = watch.next_event(0)
    assert event is not None and event.type is EventType.DELETE and event.kv.mod_revision == written + 1


def test_a_put_with_an_unknown_lease_is_refused_like_etcd() -> None:
    etcd = MemoryEtcd()
    with pytest.raises(OperationFailed, match="requested lease not found"):
        etcd.put("/k", b"v", lease=12345)
    assert etcd.revision == 1


def test_a_watcher_that_falls_behind_a_compaction_is_told_so() -> None:
    etcd = MemoryEtcd()
    etcd.put("/k", b"1")
    watch = etcd.watch("/k", start_revision=2)
    assert watch.next_event(0) is not None
    etcd.put("/k", b"2")
    etcd.put("/k", b"3")
    etcd.compact(etcd.revision)
    with pytest.raises(RevisionCompacted, match="compacted past the start revision"):
        watch.next_event(0)
    assert watch.next_event(0) is None  # the watch ended


def test_a_watch_wakes_when_another_thread_writes() -> None:
    etcd = MemoryEtcd()
    watch = etcd.watch("/k")
    writer = threading.Timer(0.05, lambda: etcd.put("/k", b"v"))
    writer.start()
    event = watch.next_event(5)
    writer.join()
    assert event is not None and event.kv.value == b"v"


def test_closing_a_watch_ends_its_iteration() -> None:
    etcd = MemoryEtcd()
    watch = etcd.watch("/k")
    etcd.put("/k", b"v")
    watch.close()
    assert [e.kv.value for e in watch] == []


def test_without_quorum_keys_are_unavailable_but_members_still_answer_status() -> None:
    etcd = MemoryEtcd(members=3)
    etcd.stop(2)
    etcd.put("/k", b"v")
    etcd.stop(3)
    with pytest.raises(EtcdUnavailable, match="no leader"):
        etcd.get("/k")
    status = etcd.status(member_urls(1)[0])
    assert status.leader_id == 0 and not status.is_leader
    with pytest.raises(EtcdUnavailable):
        etcd.status(member_urls(2)[0])


def test_a_learner_is_promoted_only_once_it_caught_up() -> None:
    clock = FakeClock()
    etcd = MemoryEtcd(clock, members=3, catch_up_rate=10)
    with pytest.raises(OperationFailed, match="Peer URLs already exists"):
        etcd.member_add([member_urls(3)[1]], learner=True)
    etcd.member_remove(3)
    learner = etcd.member_add([member_urls(3)[1]], learner=True)
    assert learner.name == "" and learner.is_learner
    etcd.start(learner.id, "m3", member_urls(3)[0])
    clock.advance(5)
    assert etcd.status(member_urls(3)[0]).raft_applied_index == 50
    with pytest.raises(OperationFailed, match="in sync with leader"):
        etcd.member_promote(learner.id)
    clock.advance(5)
    promoted = {m.id: m for m in etcd.member_promote(learner.id)}
    assert not promoted[learner.id].is_learner and len(promoted) == 3


def test_an_injected_fault_fires_once_after_the_calls_it_waits_for() -> None:
    etcd = MemoryEtcd()
    etcd.inject(Fault("put", after_calls=1))
    etcd.put("/a", b"1")
    with pytest.raises(EtcdUnavailable, match="injected"):
        etcd.put("/b", b"2")
    etcd.put("/b", b"2")
    assert etcd.calls["put"] == 3 and etcd.range("/", prefix=True).count == 2


def test_an_unknown_operation_cannot_be_faulted() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        Fault("snapshot")


def test_followers_name_the_old_leader_until_the_election_ends() -> None:
    etcd = MemoryEtcd(members=3)
    etcd.stop(1)
    etcd.members[2].names_leader = 1
    assert etcd.status(member_urls(2)[0]).leader_id == 1
    assert etcd.status(member_urls(3)[0]).leader_id == 2
    etcd.members[2].names_leader = None
    assert etcd.status(member_urls(2)[0]).is_leader


def test_a_removed_member_answers_status_as_itself_until_it_stops() -> None:
    etcd = MemoryEtcd(members=3)
    etcd.member_remove(3)
    assert [m.id for m in etcd.member_list().members] == [1, 2]
    assert etcd.status(member_urls(3)[0]).member_id == 3
    etcd.stop(3)
    with pytest.raises(EtcdUnavailable):
        etcd.status(member_urls(3)[0])
