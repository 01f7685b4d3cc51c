"""Cluster health judged from etcd's answers: per-member verdicts, quorum arithmetic, fetching."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lifeboat.clock import FakeClock
from lifeboat.errors import EtcdUnavailable
from lifeboat.etcd.memory import Fault, MemoryEtcd
from lifeboat.etcdapi.model import Alarm, AlarmType, Member, MemberList, MemberStatus
from lifeboat.recovery.health import (
    DEFAULT_QUOTA_BYTES,
    ClusterHealth,
    assess,
    quorum_of,
    read_cluster_health,
)


def url(i: int) -> str:
    return f"https://10.0.0.{i}:2379"


def member(i: int, learner: bool = False, name: str | None = None) -> Member:
    return Member(i, f"m{i}" if name is None else name, (f"https://10.0.0.{i}:2380",),
                  (url(i),) if name != "" else (), learner)


def status(i: int, leader: int = 1, errors: tuple[str, ...] = (), learner: bool = False,
           db_size: int = 1 << 20) -> MemberStatus:
    return MemberStatus(
        endpoint=url(i), member_id=i, cluster_id=7, version="3.5.9", db_size=db_size,
        db_size_in_use=db_size // 2, leader_id=leader, raft_index=100, raft_term=3,
        raft_applied_index=100, is_learner=learner, errors=errors, revision=50,
    )


def cluster(size: int, down: set[int] | None = None, learners: set[int] | None = None,
            leader: int = 1, alarms: list[Alarm] | None = None) -> ClusterHealth:
    down, learners = down or set(), learners or set()
    leader = leader if leader not in down else min(set(range(1, size + 1)) - down, default=0)
    members = MemberList(7, tuple(member(i, i in learners) for i in range(1, size + 1)), 1)
    statuses = {i: status(i, leader, learner=i in learners) for i in range(1, size + 1) if i not in down}
    unreachable = {i: "connection refused" for i in down}
    return assess(members, statuses, unreachable, alarms or [])


@pytest.mark.parametrize(("voting", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_quorum_is_a_strict_majority_of_voting_members(voting: int, quorum: int) -> None:
    assert quorum_of(voting) == quorum


@pytest.mark.parametrize(
    ("size", "down", "healthy", "can_lose", "lost"),
    [
        (1, set(), 1, 0, False),
        (1, {1}, 0, 0, True),
        (3, set(), 3, 1, False),
        (3, {3}, 2, 0, False),
        (3, {2, 3}, 1, 0, True),
        (5, set(), 5, 2, False),
        (5, {4, 5}, 3, 0, False),
        (5, {3, 4, 5}, 2, 0, True),
        (7, {7}, 6, 2, False),
        (7, {5, 6, 7}, 4, 0, False),
        (7, {4, 5, 6, 7}, 3, 0, True),
    ],
)
def test_failed_members_reduce_how_many_more_may_fail(
    size: int, down: set[int], healthy: int, can_lose: int, lost: bool
) -> None:
    health = cluster(size, down)
    assert len(health.healthy_voting) == healthy
    assert health.can_lose == can_lose
    assert health.quorum_lost is lost
    assert {m.id for m in health.failed} == down


def test_learners_do_not_count_towards_quorum() -> None:
    health = cluster(4, learners={4})
    assert len(health.voting) == 3
    assert health.quorum == 2
    assert health.can_lose == 1
    assert "1 learner" in health.summary()


def test_summary_line_names_members_quorum_and_margin() -> None:
    assert cluster(3).summary() == "3 voting members, 3 healthy, quorum 2, can lose 1"
    assert cluster(3, {2, 3}).summary() == "3 voting members, 1 healthy, quorum 2, QUORUM LOST"


def test_member_without_leader_is_unhealthy_and_says_so() -> None:
    members = MemberList(7, (member(1), member(2), member(3)), 1)
    statuses = {1: status(1, leader=0, errors=("etcdserver: no leader",))}
    health = assess(members, statuses, {2: "refused", 3: "refused"}, [])
    first = health.members[0]
    assert first.reachable and not first.healthy
    assert first.problem == "has no leader"
    assert health.quorum_lost


def test_nospace_alarm_in_status_errors_does_not_make_members_unhealthy() -> None:
    # etcd repeats every raised alarm in each member's Status errors.
    alarm_text = "memberID:2 alarm:NOSPACE "
    members = MemberList(7, (member(1), member(2), member(3)), 1)
    statuses = {i: status(i, errors=(alarm_text,)) for i in (1, 2, 3)}
    health = assess(members, statuses, {}, [])
    assert all(m.healthy for m in health.members)
    assert health.alarms == (("m2", AlarmType.NOSPACE),)
    assert any("NOSPACE" in w for w in health.members[1].warnings)


def test_corrupt_alarm_makes_that_member_unhealthy_only() -> None:
    health = cluster(3, alarms=[Alarm(3, AlarmType.CORRUPT)])
    assert [m.id for m in health.failed] == [3]
    assert "CORRUPT" in (health.members[2].problem or "")
    assert health.can_lose == 0


def test_member_added_but_never_started_is_reported_as_such() -> None:
    members = MemberList(7, (member(1), member(2), member(3, learner=True, name="")), 1)
    health = assess(members, {1: status(1), 2: status(2)}, {}, [])
    newcomer = health.members[2]
    assert not newcomer.started
    assert newcomer.problem is not None and "never started" in newcomer.problem
    assert not health.quorum_lost


def test_db_near_quota_is_a_warning_not_a_failure() -> None:
    members = MemberList(7, (member(1),), 1)
    health = assess(members, {1: status(1, db_size=int(DEFAULT_QUOTA_BYTES * 0.9))}, {}, [])
    only = health.members[0]
    assert only.healthy
    assert only.db_share_of_quota == pytest.approx(0.9)
    assert any("90%" in w for w in only.warnings)


def test_follower_of_a_leader_that_does_not_answer_is_unhealthy() -> None:
    # etcd 3.5's pre-vote: a follower that lost its leader keeps naming it while campaigning.
    members = MemberList(7, (member(1), member(2), member(3)), 1)
    health = assess(members, {1: status(1, leader=3)}, {2: "refused", 3: "refused"}, [])
    assert health.members[0].problem == "follows leader 3, which does not answer as leader here"
    assert health.quorum_lost


def test_leader_is_the_one_healthy_members_agree_on() -> None:
    health = cluster(3, leader=2)
    assert health.leader is not None and health.leader.id == 2


def test_member_is_found_by_name_or_hex_id() -> None:
    health = cluster(3)
    assert health.member_named("m2") is health.members[1]
    assert health.member_named("b") is None
    big = assess(MemberList(7, (replace(member(1), id=0xABC),), 1), {}, {}, [])
    assert big.member_named("abc") is big.members[0]


def running(*ids: int, down: tuple[int, ...] = ()) -> MemoryEtcd:
    """Members ``ids`` at ``url(i)`` (cluster 7); those in ``down`` have stopped."""
    etcd = MemoryEtcd(FakeClock(), members=[member(i) for i in ids], cluster_id=7)
    for i in down:
        etcd.stop(i)
    return etcd


def test_members_are_probed_on_their_own_client_urls_too() -> None:
    etcd = running(1, 2, 3)
    health = read_cluster_health(etcd, ["https://127.0.0.1:2379"])
    assert all(m.healthy for m in health.members)
    assert etcd.calls["status"] == 4
    assert health.endpoint_failures == (
        "https://127.0.0.1:2379: status of https://127.0.0.1:2379: no etcd endpoint answered; "
        "tried https://127.0.0.1:2379",)


def test_unreachable_member_keeps_the_reason() -> None:
    health = read_cluster_health(running(1, 2, 3, down=(3,)), [url(1)])
    third = health.members[2]
    assert not third.reachable
    assert f"status of {url(3)}: no etcd endpoint answered" in (third.problem or "")


def test_alarm_list_is_not_asked_without_a_leader() -> None:
    etcd = running(1, 2, 3, down=(2, 3))
    health = read_cluster_health(etcd, [url(1)])
    assert etcd.calls["alarms"] == 0
    assert health.alarms_error is not None and "leader" in health.alarms_error


def test_alarm_list_failure_is_recorded_not_raised() -> None:
    etcd = running(1)
    etcd.inject(Fault("alarms", EtcdUnavailable("alarm list: timed out")))
    health = read_cluster_health(etcd, [url(1)])
    assert health.alarms_error == "alarm list: timed out"
    assert health.members[0].healthy


def test_nothing_answering_gives_an_empty_health() -> None:
    health = read_cluster_health(running(1, 2, down=(1, 2)), [url(1), url(2)])
    assert not health.answered
    assert len(health.endpoint_failures) == 2
    assert health.summary() == "no etcd member answered"


def test_endpoint_answering_as_a_removed_member_is_reported() -> None:
    etcd = running(1, 9)
    etcd.member_remove(9)  # its process still runs until it learns it was removed
    health = read_cluster_health(etcd, [url(1), url(9)])
    assert any("not in the member list" in f for f in health.endpoint_failures)
    assert [m.id for m in health.members] == [1]


def test_leader_election_in_progress_is_waited_out_not_reported_as_quorum_lost() -> None:
    # Leader 3 just died; 1 and 2 still name it until one of them wins the election.
    etcd = running(1, 2, 3, down=(3,))
    etcd.members[1].names_leader = etcd.members[2].names_leader = 3
    sleeps: list[float] = []

    class ElectionEnds(FakeClock):
        def sleep(self, seconds: float) -> None:
            sleeps.append(seconds)
            etcd.members[1].names_leader = etcd.members[2].names_leader = None
            super().sleep(seconds)

    health = read_cluster_health(etcd, [url(1)], clock=ElectionEnds())
    assert len(sleeps) == 1
    assert not health.quorum_lost and health.can_lose == 0


def test_election_won_but_not_yet_followed_is_waited_out_not_reported_as_quorum_lost() -> None:
    # Leader 3 just died; 1 has won the election but 2 still names 3 as its leader.
    etcd = running(1, 2, 3, down=(3,))
    etcd.members[2].names_leader = 3
    sleeps: list[float] = []

    class FollowerCatchesUp(FakeClock):
        def sleep(self, seconds: float) -> None:
            sleeps.append(seconds)
            etcd.members[2].names_leader = None
            super().sleep(seconds)

    health = read_cluster_health(etcd, [url(1)], clock=FollowerCatchesUp())
    assert len(sleeps) == 1
    assert not health.quorum_lost and health.can_lose == 0


def test_leaderless_majority_is_reported_once_the_settle_time_is_over() -> None:
    etcd = running(1, 2, 3, down=(3,))
    etcd.members[1].names_leader = etcd.members[2].names_leader = 3
    clock = FakeClock()
    started = clock.monotonic()
    health = read_cluster_health(etcd, [url(1)], settle=3, clock=clock)
    assert clock.monotonic() - started == 3
    assert health.quorum_lost
    assert all("does not answer as leader" in (m.problem or "") for m in health.members[:2])
