from __future__ import annotations

from collections.abc import Callable

import pytest

from lifeboat.backup.source import choose_source_member
from lifeboat.clock import FakeClock
from lifeboat.errors import NoHealthyMember
from lifeboat.etcd.memory import MemoryEtcd
from lifeboat.etcdapi.model import AlarmType, Member


def member(i: int, learner: bool = False) -> Member:
    return Member(i, f"m{i}", (f"https://10.0.0.{i}:2380",), (url(i),), learner)


def url(i: int) -> str:
    return f"https://10.0.0.{i}:2379"


def cluster(*members: Member, applied: dict[int, int] | None = None) -> MemoryEtcd:
    """Members at ``url(i)``, each at its applied index (100 unless given); nobody catches up."""
    etcd = MemoryEtcd(FakeClock(), members=members, cluster_id=7, catch_up_rate=0)
    for i, index in (applied or {}).items():
        etcd.members[i].applied = index
    return etcd


def test_prefers_most_applied_then_a_follower() -> None:
    etcd = cluster(member(1), member(2), member(3), applied={3: 99})
    choice = choose_source_member(etcd, [url(1), url(2), url(3)])
    assert etcd.status(url(1)).is_leader
    assert choice.member.id == 2  # as fresh as the leader (1), and not the leader


def test_unreachable_member_is_skipped_for_the_next() -> None:
    etcd = cluster(member(1), member(2), member(3))
    etcd.stop(1)
    choice = choose_source_member(etcd, [url(1), url(2)])
    assert choice.member.id == 2
    assert any(s.startswith(url(1)) and "no etcd endpoint answered" in s for s in choice.skipped)


def test_learner_only_endpoint_list_is_refused() -> None:
    etcd = cluster(member(1), member(4, learner=True))
    with pytest.raises(NoHealthyMember, match="learner"):
        choose_source_member(etcd, [url(4)])


def lose_quorum(etcd: MemoryEtcd) -> None:
    etcd.stop(2)
    etcd.stop(3)


def report_errors(etcd: MemoryEtcd) -> None:
    etcd.members[1].errors = ("raft: stopped",)


@pytest.mark.parametrize("broken", [lose_quorum, report_errors])
def test_member_without_leader_or_with_errors_is_refused(broken: Callable[[MemoryEtcd], None]) -> None:
    etcd = cluster(member(1), member(2), member(3))
    broken(etcd)
    with pytest.raises(NoHealthyMember):
        choose_source_member(etcd, [url(1)])


def test_corrupt_alarm_excludes_the_member() -> None:
    etcd = cluster(member(1), member(2), applied={2: 50})
    etcd.raise_alarm(1, AlarmType.CORRUPT)
    assert choose_source_member(etcd, [url(1), url(2)]).member.id == 2
