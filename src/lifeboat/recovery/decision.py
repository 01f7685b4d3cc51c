"""What to do about a cluster in the state :class:`ClusterHealth` describes; pure.

The table (the project's seed 004, the way Anthos/kubeadm runbooks put it):

============================  ================================================================
cluster                       action
============================  ================================================================
every member healthy          nothing (a raised NOSPACE alarm: free space, disarm; no restore)
one voting member, broken     restore that member from a backup
HA, quorum intact, some fail  do NOT restore; replace each failed member (``member replace``)
HA, quorum lost               restore every member from the same backup
nothing answered              unknown: check etcd runs and the flags; restore if data is lost
============================  ================================================================

A full restore rolls the whole cluster back to the backup's revision; while a quorum of
members still holds newer data that is a loss, so :func:`restore_allowed` refuses it
unless forced.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lifeboat.recovery.health import ClusterHealth


class Action(enum.Enum):
    NOTHING = "nothing"
    CLEAR_ALARM = "clear-alarm"
    REPLACE_MEMBERS = "replace-members"
    RESTORE_MEMBER = "restore-member"
    RESTORE_ALL = "restore-all"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RecoveryDecision:
    """The recommended action, the members it concerns, why, and the commands to run."""

    action: Action
    reason: str
    members: tuple[str, ...]
    commands: tuple[str, ...]
    voting_members: int
    quorum_intact: bool

    @property
    def restore_refusal(self) -> str | None:
        """Why a full restore must not run now (None: it may)."""
        if self.voting_members > 1 and self.quorum_intact:
            return (
                f"etcd still has quorum ({self.voting_members} voting members): a restore would roll "
                "the working cluster back to the backup; replace failed members with "
                "'lifeboat member replace NAME' instead, or pass --force to restore anyway"
            )
        return None


def decide_recovery(health: ClusterHealth) -> RecoveryDecision:
    """Apply the decision table of this module's docstring to ``health``."""
    voting = len(health.voting)
    intact = health.answered and not health.quorum_lost
    failed = tuple(_label(m.name, m.id) for m in health.failed)

    def decision(action: Action, reason: str, commands: tuple[str, ...] = ()) -> RecoveryDecision:
        return RecoveryDecision(action, reason, failed, commands, voting, intact)

    if not health.answered:
        return decision(
            Action.UNKNOWN,
            "no etcd member answered, so nothing is known about the cluster; if etcd is running, "
            "check --endpoints and the certificates; if every member's data is lost, restore every "
            "member from the same backup",
            ("lifeboat restore plan",),
        )
    if voting == 1 and health.quorum_lost:
        return decision(
            Action.RESTORE_MEMBER,
            f"the only voting member, {failed[0] if failed else '?'}, is broken; if restarting etcd "
            "does not help, restore it from the newest backup",
            ("lifeboat restore latest",),
        )
    if health.quorum_lost:
        return decision(
            Action.RESTORE_ALL,
            f"quorum lost: {len(health.healthy_voting)} of {voting} voting members healthy, "
            f"{health.quorum} needed; if the failed members' data is intact, restart them first; "
            "otherwise restore every member from the same backup",
            ("lifeboat restore plan",),
        )
    if failed:
        return decision(
            Action.REPLACE_MEMBERS,
            f"quorum intact ({len(health.healthy_voting)} of {voting} voting members healthy): do not "
            f"restore; replace {', '.join(failed)} (or restart it if its data is intact)",
            tuple(f"lifeboat member replace {name}" for name in failed),
        )
    if health.alarms:
        raised = ", ".join(f"{a.value} on {name}" for name, a in health.alarms)
        return decision(
            Action.CLEAR_ALARM,
            f"every member is healthy but alarms are raised ({raised}): compact and defragment to "
            "free space, then disarm; no restore is needed",
            ("etcdctl defrag --cluster", "etcdctl alarm disarm"),
        )
    return decision(Action.NOTHING, f"healthy: {health.summary()}")


def restore_allowed(decision: RecoveryDecision, force: bool) -> bool:
    """Whether a full restore may run: not while an HA cluster keeps quorum, unless forced.

    For the restore command: call it with the decision for the cluster being restored and
    the user's ``--force``; when it returns False, stop before touching the node with a
    ``UsageError`` carrying ``decision.restore_refusal``. A single-member cluster, a cluster
    without quorum and one where nothing answered may always be restored.
    """
    return force or decision.restore_refusal is None


def _label(name: str, member_id: int) -> str:
    return name or f"{member_id:x}"
