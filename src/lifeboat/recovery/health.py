"""How healthy an etcd cluster is, as seen from this host: members, quorum, alarms.

:func:`read_cluster_health` does all the asking (MemberList, Status of every member on
its own advertised client URLs and on the endpoints the user gave, Alarm); :func:`assess`
turns the answers into a :class:`ClusterHealth` and is pure. A member counts as healthy
when it answers Status, follows a leader that answers, reports no error and has no CORRUPT alarm.
A leader counts only when it answers and calls itself leader. Quorum is judged from the
voting members only: learners never vote.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lifeboat.clock import Clock, SystemClock
from lifeboat.errors import LifeboatError
from lifeboat.etcd.seam import ClusterView
from lifeboat.etcdapi.model import Alarm, AlarmType, Member, MemberList, MemberStatus
from lifeboat.waits import mapped

# etcd's default --quota-backend-bytes (DefaultQuotaBytes in etcd's server/storage/quota.go,
# 3.4 and 3.5): 2 GiB.
DEFAULT_QUOTA_BYTES = 2 * 1024**3

# How often a leaderless majority is asked again while it may be electing.
SETTLE_POLL = 0.25
# Share of the quota above which a member's db is reported as nearly full.
QUOTA_WARNING_SHARE = 0.8

# etcd's Status adds "etcdserver: no leader" and one "memberID:<decimal> alarm:<TYPE> " per
# raised alarm to its errors (etcdserver/api/v3rpc/maintenance.go, 3.4 and 3.5).
_ALARM_TEXT = re.compile(r"memberID:(\d+)\s+alarm:(\w+)")
_NO_LEADER_TEXT = "no leader"


@dataclass(frozen=True)
class MemberHealth(Member):
    """One member: what MemberList says (a learner also if it says so itself), what it said, the verdict."""

    status: MemberStatus | None
    unreachable_reason: str | None
    alarms: tuple[AlarmType, ...]
    quota_bytes: int
    leader_answers: bool = True
    """Whether the leader this member names answered us and called itself leader."""

    @property
    def reachable(self) -> bool:
        return self.status is not None

    @property
    def started(self) -> bool:
        """False for a member added to the cluster that never ran (etcd leaves its name empty)."""
        return bool(self.name)

    @property
    def problem(self) -> str | None:
        """Why the member is not healthy; None when it is."""
        if self.status is None:
            if not self.started:
                return "added but never started (no name, no client URLs yet)"
            return f"unreachable: {self.unreachable_reason or 'no client URL answered'}"
        if AlarmType.CORRUPT in self.alarms:
            return "CORRUPT alarm: its data differs from the other members'"
        if self.status.leader_id == 0:
            return "has no leader"
        if not self.leader_answers:
            return f"follows leader {self.status.leader_id:x}, which does not answer as leader here"
        errors = [e for e in self.status.errors if not _ALARM_TEXT.search(e)]
        if errors:
            return "reports errors: " + "; ".join(errors)
        return None

    @property
    def healthy(self) -> bool:
        return self.problem is None

    @property
    def db_share_of_quota(self) -> float | None:
        if self.status is None or self.quota_bytes <= 0:
            return None
        return self.status.db_size / self.quota_bytes

    @property
    def warnings(self) -> tuple[str, ...]:
        """Things worth attention that do not make the member unhealthy."""
        found: list[str] = []
        if AlarmType.NOSPACE in self.alarms:
            found.append("NOSPACE alarm: writes refused until space is freed and the alarm disarmed")
        share = self.db_share_of_quota
        if share is not None and share >= QUOTA_WARNING_SHARE:
            found.append(f"db is {share:.0%} of the {self.quota_bytes} byte quota")
        return tuple(found)


@dataclass(frozen=True)
class ClusterHealth:
    """A whole cluster's health as seen from this host at one moment."""

    members: tuple[MemberHealth, ...]
    cluster_id: int | None
    endpoints: tuple[str, ...]
    endpoint_failures: tuple[str, ...]
    """``"<url>: <why>"`` for every given endpoint that did not answer Status."""
    alarms_error: str | None
    """Why the cluster's alarm list could not be read (then alarms come from Status only)."""

    @property
    def answered(self) -> bool:
        """Whether any etcd member answered at all (False: nothing is known about the cluster)."""
        return bool(self.members)

    @property
    def voting(self) -> tuple[MemberHealth, ...]:
        return tuple(m for m in self.members if not m.is_learner)

    @property
    def learners(self) -> tuple[MemberHealth, ...]:
        return tuple(m for m in self.members if m.is_learner)

    @property
    def healthy_voting(self) -> tuple[MemberHealth, ...]:
        return tuple(m for m in self.voting if m.healthy)

    @property
    def failed(self) -> tuple[MemberHealth, ...]:
        """Every member, voting or learner, that is not healthy."""
        return tuple(m for m in self.members if not m.healthy)

    @property
    def quorum(self) -> int:
        """Voting members that must agree for etcd to commit anything: a majority."""
        return quorum_of(len(self.voting))

    @property
    def quorum_lost(self) -> bool:
        return len(self.healthy_voting) < self.quorum

    @property
    def can_lose(self) -> int:
        """How many more voting members may fail before quorum is lost (0 when already lost)."""
        return max(len(self.healthy_voting) - self.quorum, 0)

    @property
    def leader(self) -> MemberHealth | None:
        """The member most healthy members name as leader, when it is a member."""
        votes = Counter(m.status.leader_id for m in self.members if m.healthy and m.status)
        if not votes:
            return None
        leader_id = votes.most_common(1)[0][0]
        return next((m for m in self.members if m.id == leader_id), None)

    @property
    def alarms(self) -> tuple[tuple[str, AlarmType], ...]:
        """``(member name, alarm)`` for every raised alarm."""
        return tuple((m.name or f"{m.id:x}", a) for m in self.members for a in m.alarms)

    def member_named(self, name: str) -> MemberHealth | None:
        """The member called ``name``, or whose hex id is ``name``."""
        for m in self.members:
            if m.name == name or f"{m.id:x}" == name.lower():
                return m
        return None

    def summary(self) -> str:
        """One line: "3 voting members, 2 healthy, quorum 2, can lose 0"."""
        if not self.answered:
            return "no etcd member answered"
        voting = len(self.voting)
        text = (f"{voting} voting member{'s' if voting != 1 else ''}, "
                f"{len(self.healthy_voting)} healthy, quorum {self.quorum}, ")
        text += "QUORUM LOST" if self.quorum_lost else f"can lose {self.can_lose}"
        if self.learners:
            text += f"; {len(self.learners)} learner{'s' if len(self.learners) != 1 else ''}"
        return text


def quorum_of(voting_members: int) -> int:
    """etcd's raft quorum: a strict majority of the voting members."""
    return voting_members // 2 + 1


def assess(
    members: MemberList | None,
    statuses: Mapping[int, MemberStatus],
    unreachable: Mapping[int, str],
    alarms: Sequence[Alarm],
    *,
    endpoints: Sequence[str] = (),
    endpoint_failures: Sequence[str] = (),
    alarms_error: str | None = None,
    quota_bytes: int = DEFAULT_QUOTA_BYTES,
) -> ClusterHealth:
    """Judge the cluster from what etcd answered; pure.

    ``statuses`` and ``unreachable`` are keyed by member id. Alarms are the union of
    ``alarms`` (the cluster's list) and those members mention in their Status errors, so
    they are known even when the list could not be read for want of a leader.
    """
    # With raft's pre-vote (etcd 3.5's default) a follower that lost its leader keeps naming
    # it while it campaigns, so a named leader counts only if it says so itself.
    leaders = {member_id for member_id, s in statuses.items() if s.leader_id == member_id}
    raised: dict[int, set[AlarmType]] = {}
    for alarm in [*alarms, *_alarms_in_statuses(statuses.values())]:
        raised.setdefault(alarm.member_id, set()).add(alarm.type)
    judged = tuple(
        MemberHealth(
            id=m.id, name=m.name, peer_urls=m.peer_urls, client_urls=m.client_urls,
            is_learner=m.is_learner or bool(statuses.get(m.id) and statuses[m.id].is_learner),
            status=statuses.get(m.id), unreachable_reason=unreachable.get(m.id),
            alarms=tuple(sorted(raised.get(m.id, ()), key=lambda a: a.value)),
            quota_bytes=quota_bytes,
            leader_answers=m.id not in statuses or statuses[m.id].leader_id in leaders,
        )
        for m in (members.members if members else ())
    )
    return ClusterHealth(
        members=judged,
        cluster_id=members.cluster_id if members else None,
        endpoints=tuple(endpoints),
        endpoint_failures=tuple(endpoint_failures),
        alarms_error=alarms_error,
    )


def _alarms_in_statuses(statuses: Iterable[MemberStatus]) -> list[Alarm]:
    found: list[Alarm] = []
    for status in statuses:
        for error in status.errors:
            for member_id, kind in _ALARM_TEXT.findall(error):
                found.append(Alarm(int(member_id), AlarmType.__members__.get(kind, AlarmType.UNKNOWN)))
    return found


def read_cluster_health(
    probe: ClusterView, endpoints: Sequence[str], *, quota_bytes: int = DEFAULT_QUOTA_BYTES,
    settle: float = 5.0, clock: Clock | None = None,
) -> ClusterHealth:
    """Ask etcd everything :func:`assess` needs; members are probed in parallel.

    Every endpoint given is asked for Status, then every member not yet heard from is
    tried on its advertised client URLs. The alarm list is read only when some member
    is a leader that answers: etcd serves it through raft, so without one it would just time out.

    Right after a leader fails its followers still name it for an election timeout (1s
    by default), and a follower can still name the dead one for a moment after another
    member won, either of which would read as "quorum lost". So while a quorum of voting
    members answers but fewer of them are healthy, this asks again for up to ``settle`` seconds.
    """
    read: list[ClusterHealth] = []

    def settled() -> bool:
        health = _read_once(probe, endpoints, quota_bytes)
        read.append(health)
        answering = sum(1 for m in health.voting if m.reachable)
        return not (health.answered and answering >= health.quorum and health.quorum_lost)

    (clock or SystemClock()).wait_until(settled, settle, SETTLE_POLL)
    return read[-1]


def _read_once(probe: ClusterView, endpoints: Sequence[str], quota_bytes: int) -> ClusterHealth:
    with ThreadPoolExecutor(max_workers=8) as pool:
        by_endpoint = dict(zip(endpoints, mapped(pool, lambda url: _try_status(probe, url), endpoints)))
        statuses = {s.member_id: s for s in by_endpoint.values() if isinstance(s, MemberStatus)}
        failures = [f"{url}: {why}" for url, why in by_endpoint.items() if isinstance(why, str)]
        try:
            members: MemberList | None = probe.member_list()
        except LifeboatError:
            members = None
        known = {m.id for m in members.members} if members else set()
        failures += [
            f"{s.endpoint}: answers as member {s.member_id:x}, which is not in the member list (removed?)"
            for s in statuses.values() if members and s.member_id not in known
        ]
        pending = [m for m in (members.members if members else ()) if m.id not in statuses]
        reached = mapped(pool, lambda m: _status_of_member(probe, m), pending)
        unreachable: dict[int, str] = {}
        for member, found in zip(pending, reached):
            if isinstance(found, MemberStatus) and found.member_id == member.id:
                statuses[member.id] = found
            elif isinstance(found, MemberStatus):
                unreachable[member.id] = f"{found.endpoint} is served by another member ({found.member_id:x})"
            else:
                unreachable[member.id] = found
    alarms: list[Alarm] = []
    alarms_error = None
    if any(s.leader_id == s.member_id for s in statuses.values()):
        try:
            alarms = probe.alarms()
        except LifeboatError as exc:
            alarms_error = str(exc)
    else:
        alarms_error = "no leader answered, so the alarm list cannot be read"
    return assess(
        members, statuses, unreachable, alarms, endpoints=endpoints, endpoint_failures=failures,
        alarms_error=alarms_error, quota_bytes=quota_bytes,
    )


def _try_status(probe: ClusterView, url: str) -> MemberStatus | str:
    try:
        return probe.status(url)
    except LifeboatError as exc:
        return str(exc)


def _status_of_member(probe: ClusterView, member: Member) -> MemberStatus | str:
    """The member's Status from the first of its client URLs that answers, else why not."""
    if not member.client_urls:
        return "advertises no client URL"
    reasons: list[str] = []
    for url in member.client_urls:
        found = _try_status(probe, url)
        if isinstance(found, MemberStatus):
            return found
        reasons.append(found)
    return "; ".join(reasons)
