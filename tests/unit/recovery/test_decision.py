"""The seed-004 decision table applied to cluster health, and when a full restore is allowed."""

from __future__ import annotations

import pytest

from lifeboat.etcdapi.model import Alarm, AlarmType, Member, MemberList, MemberStatus
from lifeboat.recovery.decision import Action, decide_recovery, restore_allowed
from lifeboat.recovery.health import ClusterHealth, assess


def health_of(size: int, down: set[int] | None = None, learners: set[int] | None = None,
              alarms: list[Alarm] | None = None) -> ClusterHealth:
    down, learners = down or set(), learners or set()
    members = MemberList(7, tuple(
        Member(i, f"m{i}", (f"https://10.0.0.{i}:2380",), (f"https://10.0.0.{i}:2379",), i in learners)
        for i in range(1, size + 1)
    ), 1)
    alive = [i for i in range(1, size + 1) if i not in down]
    leader = alive[0] if alive and len(alive) > size // 2 else 0
    statuses = {
        i: MemberStatus(f"https://10.0.0.{i}:2379", i, 7, "3.5.9", 1 << 20, 1 << 19, leader,
                        100, 3, 100, i in learners, (), 50)
        for i in range(1, size + 1) if i not in down
    }
    return assess(members, statuses, {i: "refused" for i in down}, alarms or [])


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_healthy_cluster_needs_nothing(size: int) -> None:
    decision = decide_recovery(health_of(size))
    assert decision.action is Action.NOTHING
    assert decision.members == ()
    assert "healthy" in decision.reason


def test_broken_single_member_is_restored() -> None:
    decision = decide_recovery(health_of(1, {1}))
    assert decision.action is Action.RESTORE_MEMBER
    assert decision.members == ("m1",)
    assert restore_allowed(decision, force=False)


@pytest.mark.parametrize(("size", "down"), [(3, {3}), (5, {4, 5}), (7, {1, 2, 3}), (5, {1})])
def test_ha_with_quorum_replaces_failed_members_and_refuses_restore(size: int, down: set[int]) -> None:
    decision = decide_recovery(health_of(size, down))
    assert decision.action is Action.REPLACE_MEMBERS
    assert set(decision.members) == {f"m{i}" for i in down}
    assert decision.commands == tuple(f"lifeboat member replace m{i}" for i in sorted(down))
    assert "do not restore" in decision.reason
    assert not restore_allowed(decision, force=False)
    assert restore_allowed(decision, force=True)
    assert decision.restore_refusal is not None and "--force" in decision.restore_refusal


@pytest.mark.parametrize(("size", "down"), [(3, {2, 3}), (3, {1, 2, 3}), (5, {1, 2, 3}), (7, {1, 2, 3, 4})])
def test_ha_without_quorum_restores_every_member(size: int, down: set[int]) -> None:
    decision = decide_recovery(health_of(size, down))
    assert decision.action is Action.RESTORE_ALL
    assert "quorum lost" in decision.reason
    assert "same backup" in decision.reason
    assert restore_allowed(decision, force=False)


def test_two_member_cluster_loses_quorum_with_one_failure() -> None:
    assert decide_recovery(health_of(2, {2})).action is Action.RESTORE_ALL


def test_failed_learner_is_replaced_without_touching_quorum() -> None:
    decision = decide_recovery(health_of(4, {4}, learners={4}))
    assert decision.action is Action.REPLACE_MEMBERS
    assert decision.members == ("m4",)


def test_nothing_answering_is_unknown_and_allows_a_restore() -> None:
    empty = assess(None, {}, {}, [])
    decision = decide_recovery(empty)
    assert decision.action is Action.UNKNOWN
    assert "--endpoints" in decision.reason
    assert restore_allowed(decision, force=False)


def test_nospace_alarm_on_a_healthy_cluster_is_cleared_not_restored() -> None:
    decision = decide_recovery(health_of(3, alarms=[Alarm(1, AlarmType.NOSPACE)]))
    assert decision.action is Action.CLEAR_ALARM
    assert "NOSPACE on m1" in decision.reason
    assert not restore_allowed(decision, force=False)


def test_single_healthy_member_may_be_rolled_back_deliberately() -> None:
    decision = decide_recovery(health_of(1))
    assert decision.action is Action.NOTHING
    assert restore_allowed(decision, force=False)
