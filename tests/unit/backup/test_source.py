from __future__ import annotations

from dataclasses import replace

import pytest

from lifeboat.backup.source import choose_source_member
from lifeboat.errors import EtcdUnavailable, NoHealthyMember
from lifeboat.etcdapi.model import Alarm, AlarmType, Member, MemberList, MemberStatus


def member(i: int, learner: bool = False) -> Member:
    return Member(i, f"m{i}", (f"https://10.0.0.{i}:2380",), (f"https://10.0.0.{i}:2379",), learner)


def status(i: int, applied: int = 100, leader: int = 1, learner: bool = False) -> MemberStatus:
    return MemberStatus(
        endpoint=f"https://10.0.0.{i}:2379", member_id=i, cluster_id=7, version="3.5.9",
        db_size=1 << 20, db_size_in_use=1 << 19, leader_id=leader, raft_index=applied,
        raft_term=3, raft_applied_index=applied, is_learner=learner, errors=(), revision=50,
    )


class FakeCluster:
    def __init__(self, statuses: dict[str, MemberStatus | Exception], members: list[Member],
                 alarms: list[Alarm] | None = None) -> None:
        self.statuses = statuses
        self.members = members
        self._alarms = alarms or []

    def member_list(self) -> MemberList:
        return MemberList(7, tuple(self.members), 1)

    def status(self, endpoint: str) -> MemberStatus:
        found = self.statuses[endpoint]
        if isinstance(found, Exception):
            raise found
        return found

    def alarms(self) -> list[Alarm]:
        return self._alarms


def url(i: int) -> str:
    return f"https://10.0.0.{i}:2379"


def test_prefers_most_applied_then_a_follower() -> None:
    view = FakeCluster({url(1): status(1, 100), url(2): status(2, 100), url(3): status(3, 99)},
                       [member(1), member(2), member(3)])
    choice = choose_source_member(view, [url(1), url(2), url(3)])
    assert choice.member.id == 2  # as fresh as the leader (1), and not the leader


def test_unreachable_member_is_skipped_for_the_next() -> None:
    view = FakeCluster({url(1): EtcdUnavailable("down"), url(2): status(2)}, [member(1), member(2)])
    choice = choose_source_member(view, [url(1), url(2)])
    assert choice.member.id == 2
    assert any("down" in s for s in choice.skipped)


def test_learner_only_endpoint_list_is_refused() -> None:
    view = FakeCluster({url(4): status(4, learner=True)}, [member(1), member(4, learner=True)])
    with pytest.raises(NoHealthyMember, match="learner"):
        choose_source_member(view, [url(4)])


@pytest.mark.parametrize("broken", [
    lambda s: replace(s, leader_id=0),
    lambda s: replace(s, errors=("raft: stopped",)),
])
def test_member_without_leader_or_with_errors_is_refused(broken) -> None:  # type: ignore[no-untyped-def]
    view = FakeCluster({url(1): broken(status(1))}, [member(1)])
    with pytest.raises(NoHealthyMember):
        choose_source_member(view, [url(1)])


def test_corrupt_alarm_excludes_the_member() -> None:
    view = FakeCluster({url(1): status(1), url(2): status(2, 50)}, [member(1), member(2)],
                       [Alarm(1, AlarmType.CORRUPT)])
    assert choose_source_member(view, [url(1), url(2)]).member.id == 2
