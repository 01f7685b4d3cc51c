"""Choosing the one etcd member a snapshot is streamed from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lifeboat.errors import BackendUnavailable, NoHealthyMember
from lifeboat.etcd.seam import ClusterView
from lifeboat.etcdapi.model import AlarmType, Member, MemberStatus


@dataclass(frozen=True)
class SourceChoice:
    """The member to back up from, the endpoint that reached it, and why others were not."""

    member: Member
    endpoint: str
    status: MemberStatus
    cluster_id: int
    skipped: tuple[str, ...]


def choose_source_member(view: ClusterView, endpoints: Sequence[str]) -> SourceChoice:
    """Pick a healthy voting member, preferring the one that has applied the most entries.

    Only the endpoints the user gave are considered (like etcdctl, lifeboat never wanders
    to URLs it was not told about); an unreachable or unhealthy one is skipped for the next.
    Learners are never chosen: a learner may lag far behind the leader. Members with a
    CORRUPT alarm, reporting errors, or without a leader are never chosen.
    """
    members = view.member_list()
    by_id = {m.id: m for m in members.members}
    corrupt = {a.member_id for a in view.alarms() if a.type is AlarmType.CORRUPT}
    candidates: list[tuple[Member, str, MemberStatus]] = []
    skipped: list[str] = []
    seen: set[int] = set()
    for url in endpoints:
        try:
            status = view.status(url)
        except BackendUnavailable as exc:
            skipped.append(f"{url}: {exc}")
            continue
        if status.member_id in seen:
            continue
        seen.add(status.member_id)
        member = by_id.get(status.member_id)
        name = member.name if member else f"{status.member_id:x}"
        reason = _unfit_reason(status, member, corrupt)
        if reason:
            skipped.append(f"{name} ({url}): {reason}")
            continue
        assert member is not None
        candidates.append((member, url, status))
    if not candidates:
        raise NoHealthyMember(
            "no healthy voting etcd member to back up from: " + "; ".join(skipped or ["none found"])
        )
    member, url, status = max(
        candidates, key=lambda c: (c[2].raft_applied_index, not c[2].is_leader)
    )
    return SourceChoice(member, url, status, members.cluster_id, tuple(skipped))


def _unfit_reason(status: MemberStatus, member: Member | None, corrupt: set[int]) -> str | None:
    if member is None:
        return "not in the member list (removed?)"
    if status.is_learner or member.is_learner:
        return "learner"
    if status.member_id in corrupt:
        return "CORRUPT alarm raised"
    if status.errors:
        return "reports errors: " + ", ".join(status.errors)
    if status.leader_id == 0:
        return "has no leader"
    return None
