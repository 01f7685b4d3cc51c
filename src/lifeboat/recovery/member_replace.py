"""Replacing a failed member of an etcd cluster that kept quorum, without a restore.

The steps, etcd's documented way to rebuild one member (etcd's "runtime reconfiguration"
guide): remove the member (MemberRemove), move its data dir aside (never delete it), add it
back as a learner (MemberAdd, learner), start it with ``--initial-cluster-state=existing``
and an ``--initial-cluster`` that names the current members, wait until it has caught up,
promote it (MemberPromote). A learner has no vote, so a slow newcomer never costs quorum.

:func:`plan_replacement` is pure: it refuses what would lose quorum and returns the ordered
steps; ``--dry-run`` prints that plan and :func:`replace_member` runs the same one. A plan
is made from the cluster as it is now, so re-running after an interruption picks up where
it stopped: a started learner is only promoted; a member already removed is added back
when its peer URLs are given.
"""

from __future__ import annotations

import enum
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from lifeboat.clock import Clock, SystemClock, wait_for
from lifeboat.durable import NotFlushed, move_durably
from lifeboat.errors import EtcdUnavailable, LifeboatError, NotFound, OperationFailed, UsageError
from lifeboat.etcd.seam import MembershipChanges
from lifeboat.etcdapi.model import MemberList, MemberStatus
from lifeboat.recovery.health import ClusterHealth, MemberHealth, quorum_of, read_cluster_health
from lifeboat.etcd.data_dir import db_locked

T = TypeVar("T")

MOVED_MARKER = ".lifeboat-moved-"

# etcd refuses MemberPromote with "can only promote a learner member which is in sync with
# leader" until the learner's log is within 90% of the leader's (etcdserver/server.go,
# readyPercent, 3.4 and 3.5).
_NOT_IN_SYNC = "in sync"
CATCH_UP_SHARE = 0.9

# With --strict-reconfig-check (the default) etcd refuses a membership change unless the
# member handling it has been connected to every voting member for 5s ("unhealthy cluster")
# and enough members are started ("not enough started members") (etcdserver/server.go,
# mayAddMember/mayRemoveMember); both are refusals before anything is applied, and pass.
_RECONFIG_NOT_YET = ("unhealthy cluster", "not enough started members")


class StepKind(enum.Enum):
    REMOVE = "remove"
    MOVE_DATA_DIR = "move-data-dir"
    ADD_LEARNER = "add-learner"
    START = "start"
    PROMOTE = "promote"


@dataclass(frozen=True)
class ReplaceStep:
    """One step of a member replacement, in the order :func:`replace_member` runs it."""

    kind: StepKind
    description: str


@dataclass(frozen=True)
class ReplacePlan:
    """What :func:`replace_member` will do, in order, and what the operator must know."""

    name: str
    member_id: int | None
    """The member to remove, or the learner to promote; None when it is no longer listed."""
    peer_urls: tuple[str, ...]
    data_dir: Path | None
    moved_to: Path | None
    steps: tuple[ReplaceStep, ...]
    notes: tuple[str, ...]

    def describe(self) -> list[str]:
        lines = [f"{i}. {step.description}" for i, step in enumerate(self.steps, 1)]
        return lines + [f"note: {note}" for note in self.notes]


def moved_aside_path(data_dir: Path, stamp: str) -> Path:
    """``<data-dir>.lifeboat-moved-<stamp>``: a sibling, so moving it is one rename."""
    return data_dir.with_name(f"{data_dir.name}{MOVED_MARKER}{stamp}")


def plan_replacement(
    health: ClusterHealth, name: str, *, stamp: str, starter: MemberStarter,
    peer_urls: Sequence[str] = (), data_dir: Path | None = None, data_dir_exists: bool = False,
    force: bool = False,
) -> ReplacePlan:
    """The steps that replace member ``name``; refuses (raises) when it is unsafe.

    ``data_dir`` is the member's data dir on this host, if it is on this host;
    ``data_dir_exists`` says whether it is there now and ``stamp`` names where it is moved
    aside, one no sibling uses yet (the caller looks, with ``unused_stamp``; this stays pure).
    """
    if not health.answered:
        raise EtcdUnavailable("no etcd member answered; a member can only be replaced in a cluster "
                              "that works (see 'lifeboat status')")
    target = health.member_named(name)
    urls = tuple(peer_urls) or (target.peer_urls if target else ())
    if target is None and not urls:
        known = ", ".join(m.name or f"{m.id:x}" for m in health.members)
        raise NotFound(f"member {name} is not in the cluster (members: {known}); if it was already "
                       "removed, pass --peer-urls to add it back")
    if target is not None and target.is_learner and target.healthy:
        return ReplacePlan(name, target.id, urls, data_dir, None,
                           (ReplaceStep(StepKind.PROMOTE, _promote_text(name)),),
                           ("it is already a running learner: only the promotion is left",))
    if target is not None:
        _check_removable(health, target, force)
    steps: list[ReplaceStep] = []
    notes: list[str] = []
    if target is not None:
        steps.append(ReplaceStep(StepKind.REMOVE, f"remove member {name} ({target.id:x}) from the cluster"))
    moved_to = None
    if data_dir is None:
        notes.append(f"the data dir of {name} is not on this host (give --data-dir on {name}'s node): it "
                     "must be moved aside before it starts, or etcd starts as the removed member and exits")
    elif data_dir_exists:
        moved_to = moved_aside_path(data_dir, stamp)
        steps.append(ReplaceStep(StepKind.MOVE_DATA_DIR, f"move the data dir {data_dir} aside to {moved_to}"))
    else:
        notes.append(f"data dir {data_dir} does not exist: nothing to move aside")
    steps.append(ReplaceStep(StepKind.ADD_LEARNER, f"add {name} back as a learner with peer URLs {','.join(urls)}"))
    steps.append(ReplaceStep(StepKind.START, f"start {name} with --initial-cluster-state=existing: {starter.describe()}"))
    steps.append(ReplaceStep(StepKind.PROMOTE, _promote_text(name)))
    return ReplacePlan(name, target.id if target else None, urls, data_dir, moved_to, tuple(steps), tuple(notes))


def _promote_text(name: str) -> str:
    return f"wait until learner {name} has caught up with the leader, then promote it to a voting member"


def _check_removable(health: ClusterHealth, target: MemberHealth, force: bool) -> None:
    if target.healthy and not force:
        raise OperationFailed(f"member {target.name} is healthy; replacing it would resync it for "
                              "nothing; pass --force to replace it anyway")
    if target.is_learner:
        return
    voting_after = len(health.voting) - 1
    if voting_after == 0:
        raise UsageError(f"{target.name} is the only voting member: a single-member cluster cannot "
                         "replace a member; restore it with 'lifeboat restore'")
    if health.quorum_lost:
        raise OperationFailed(f"quorum is lost ({health.summary()}): etcd cannot commit a membership "
                              "change; restore every member from the same backup instead")
    healthy_after = sum(1 for m in health.healthy_voting if m.id != target.id)
    if healthy_after < quorum_of(voting_after):
        raise OperationFailed(
            f"removing {target.name} would leave {healthy_after} healthy of {voting_after} voting "
            f"members, below the quorum of {quorum_of(voting_after)}; heal another member first"
        )


@dataclass(frozen=True)
class StartSpec:
    """How the re-added member must be started."""

    name: str
    peer_urls: tuple[str, ...]
    initial_cluster: str
    data_dir: Path | None

    def flags(self) -> tuple[str, ...]:
        flags = [f"--name={self.name}", f"--initial-advertise-peer-urls={','.join(self.peer_urls)}",
                 f"--initial-cluster={self.initial_cluster}", "--initial-cluster-state=existing"]
        if self.data_dir is not None:
            flags.append(f"--data-dir={self.data_dir}")
        return tuple(flags)

    def environment(self) -> dict[str, str]:
        """The settings for ``--start-command``, as ``LIFEBOAT_*`` variables.

        Not as etcd's own ``ETCD_*`` variables: etcd exits when one of those is also given as
        a flag ("conflicting environment variable ... is shadowed"; pkg/flags, 3.4 and 3.5).
        """
        env = {
            "LIFEBOAT_NAME": self.name,
            "LIFEBOAT_INITIAL_ADVERTISE_PEER_URLS": ",".join(self.peer_urls),
            "LIFEBOAT_INITIAL_CLUSTER": self.initial_cluster,
            "LIFEBOAT_INITIAL_CLUSTER_STATE": "existing",
            "LIFEBOAT_ETCD_FLAGS": " ".join(self.flags()),
        }
        if self.data_dir is not None:
            env["LIFEBOAT_DATA_DIR"] = str(self.data_dir)
        return env


class MemberStarter(Protocol):
    """The seam to whatever starts etcd on the replaced member's node."""

    def describe(self) -> str: ...

    def start(self, spec: StartSpec, report: Callable[[str], None]) -> None:
        """Have etcd started with ``spec``; may return before it answers."""


class OperatorStarter:
    """Nothing to run: print the flags for the operator, who starts etcd on that node."""

    def describe(self) -> str:
        return "you start etcd on its node with the flags printed then (empty data dir); lifeboat waits"

    def start(self, spec: StartSpec, report: Callable[[str], None]) -> None:
        report(f"start etcd for {spec.name} now, with an empty data dir and these flags "
               "(plus its usual TLS and listen flags):")
        for flag in spec.flags():
            report(f"    {flag}")


class CommandStarter:
    """``--start-command``: a shell command run with ``LIFEBOAT_INITIAL_CLUSTER`` and friends set."""

    def __init__(self, command: str, timeout: float = 120) -> None:
        self.command = command
        self.timeout = timeout

    def describe(self) -> str:
        return (f"run {self.command!r} with LIFEBOAT_NAME, LIFEBOAT_INITIAL_CLUSTER, "
                "LIFEBOAT_INITIAL_ADVERTISE_PEER_URLS, LIFEBOAT_INITIAL_CLUSTER_STATE=existing and "
                "LIFEBOAT_ETCD_FLAGS set")

    def start(self, spec: StartSpec, report: Callable[[str], None]) -> None:
        report(f"running the start command with LIFEBOAT_INITIAL_CLUSTER={spec.initial_cluster}")
        try:
            done = subprocess.run(["/bin/sh", "-c", self.command], env={**os.environ, **spec.environment()},
                                  stdin=subprocess.DEVNULL, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise OperationFailed(f"--start-command did not finish within {self.timeout:.0f}s; it should "
                                  "start etcd in the background (or through systemd) and return") from None
        except OSError as exc:
            raise OperationFailed(f"--start-command could not be run: {exc.strerror}") from None
        if done.returncode != 0:
            raise OperationFailed(f"--start-command exited with {done.returncode}; fix it, then re-run "
                                  f"'lifeboat member replace {spec.name}' (it resumes)")


@dataclass(frozen=True)
class ReplaceResult:
    member_id: int
    moved_to: Path | None
    health: ClusterHealth


def replace_member(
    etcd: MembershipChanges, plan: ReplacePlan, starter: MemberStarter, endpoints: Sequence[str], *,
    report: Callable[[str], None], timeout: float = 300, poll: float = 0.5,
    clock: Clock | None = None,
) -> ReplaceResult:
    """Run ``plan``'s steps in order, reporting each; returns the cluster's health after."""
    member_id = plan.member_id
    waiter = _Waiter(clock or SystemClock(), timeout, poll)
    for step in plan.steps:
        report(f"→ {step.description}")
        if step.kind is StepKind.REMOVE:
            assert member_id is not None
            removing = member_id
            left = waiter.until(lambda: _reconfigure(lambda: etcd.member_remove(removing)),
                                f"etcd to accept removing {plan.name}")
            report(f"  removed; {len(left)} members left")
        elif step.kind is StepKind.MOVE_DATA_DIR:
            assert plan.data_dir is not None and plan.moved_to is not None
            _move_aside(plan.data_dir, plan.moved_to, plan.name)
            report(f"  moved to {plan.moved_to}")
        elif step.kind is StepKind.ADD_LEARNER:
            added = waiter.until(lambda: _reconfigure(lambda: etcd.member_add(plan.peer_urls, learner=True)),
                                 f"etcd to accept adding {plan.name}")
            member_id = added.id
            report(f"  added as learner {member_id:x}")
        elif step.kind is StepKind.START:
            assert member_id is not None
            spec = StartSpec(plan.name, plan.peer_urls, _initial_cluster(etcd.member_list(), member_id, plan),
                             plan.data_dir)
            starter.start(spec, report)
            status = waiter.until(lambda: _learner_status(etcd, member_id), f"{plan.name} to start and answer")
            report(f"  {plan.name} answers on {status.endpoint} (applied index {status.raft_applied_index})")
        elif step.kind is StepKind.PROMOTE:
            assert member_id is not None
            _promote_when_caught_up(etcd, member_id, plan.name, waiter, report)
    assert member_id is not None
    health = waiter.until(lambda: _healthy_voting(etcd, endpoints, member_id), f"{plan.name} to be a healthy voter")
    report(f"  {health.summary()}")
    return ReplaceResult(member_id, plan.moved_to, health)


def _reconfigure(change: Callable[[], T]) -> T | None:
    """Run a membership change; None when etcd refused it for now (see _RECONFIG_NOT_YET)."""
    try:
        return change()
    except LifeboatError as exc:
        if any(reason in str(exc) for reason in _RECONFIG_NOT_YET):
            return None
        raise


def _move_aside(data_dir: Path, target: Path, name: str) -> None:
    if db_locked(data_dir):
        raise OperationFailed(f"an etcd process still has {data_dir} open; stop it, then re-run")
    # The plan chose a name no sibling had; something may have taken it since (a restore or
    # another replacement), which a plain rename onto an empty dir would replace.
    try:
        move_durably(data_dir, target)
    except FileExistsError:
        raise OperationFailed(f"{target} appeared after the plan was made; nothing was moved: re-run "
                              f"'lifeboat member replace {name}' (add --peer-urls if it was removed already)") from None
    except NotFlushed as exc:
        raise OperationFailed(f"moved {data_dir} aside to {target}, but flushing {target.parent} to disk "
                              f"failed: {exc.strerror}; check the disk: a power cut may undo the move") from None
    except OSError as exc:
        raise OperationFailed(f"cannot move {data_dir} aside to {target}: {exc.strerror}") from None


def _initial_cluster(members: MemberList, new_id: int, plan: ReplacePlan) -> str:
    """``--initial-cluster`` for the newcomer: every started member, and itself."""
    entries = [f"{plan.name}={url}" for url in plan.peer_urls]
    for m in members.members:
        if m.id != new_id and m.name:
            entries += [f"{m.name}={url}" for url in m.peer_urls]
    return ",".join(sorted(entries))


def _learner_status(etcd: MembershipChanges, member_id: int) -> MemberStatus | None:
    member = next((m for m in etcd.member_list().members if m.id == member_id), None)
    if member is None:
        raise NotFound(f"member {member_id:x} left the member list while it was being replaced")
    for url in member.client_urls:
        try:
            status = etcd.status(url)
        except LifeboatError:
            continue
        if status.member_id == member_id:
            return status
    return None


def _leader_status(etcd: MembershipChanges, leader_id: int) -> MemberStatus | None:
    leader = next((m for m in etcd.member_list().members if m.id == leader_id), None)
    for url in leader.client_urls if leader else ():
        try:
            return etcd.status(url)
        except LifeboatError:
            continue
    return None


def _promote_when_caught_up(
    etcd: MembershipChanges, member_id: int, name: str, waiter: _Waiter, report: Callable[[str], None],
) -> None:
    def attempt() -> bool | None:
        mine = _learner_status(etcd, member_id)
        if mine is None or not mine.leader_id:
            return None
        if not mine.is_learner:
            return True  # promoted already (a re-run after an interruption)
        leader = _leader_status(etcd, mine.leader_id)
        if leader is None or mine.raft_applied_index < CATCH_UP_SHARE * leader.raft_index:
            return None
        try:
            etcd.member_promote(member_id)
        except OperationFailed as exc:
            if _NOT_IN_SYNC in str(exc):
                return None
            raise
        report(f"  promoted at applied index {mine.raft_applied_index} (leader's commit index "
               f"{leader.raft_index})")
        return True

    waiter.until(attempt, f"learner {name} to catch up and be promoted")


def _healthy_voting(etcd: MembershipChanges, endpoints: Sequence[str], member_id: int) -> ClusterHealth | None:
    health = read_cluster_health(etcd, endpoints)
    member = next((m for m in health.members if m.id == member_id), None)
    return health if member is not None and member.healthy and not member.is_learner else None


class _Waiter:
    """Polls until a check returns a value, or fails with a one-line error after ``timeout``."""

    def __init__(self, clock: Clock, timeout: float, poll: float) -> None:
        self.clock, self.timeout, self.poll = clock, timeout, poll

    def until(self, check: Callable[[], T | None], what: str) -> T:
        found = wait_for(self.clock, check, self.timeout, self.poll)
        if found is None:
            raise OperationFailed(f"gave up waiting for {what} after {self.timeout:.0f}s; the steps "
                                  "done so far stay done: fix the cause and re-run to resume")
        return found
