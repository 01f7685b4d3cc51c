"""Apply retention policies to a cluster's backups: a pure function of data and a clock.

The rules, in the order they are applied to each cluster separately:

1. A backup taken after ``now`` is kept and is invisible to everything below: the
   clocks of the backup host and the pruning host disagree, and the safe reading is
   that the older backups are still needed.
2. A pinned backup is kept, whatever else holds.
3. Each policy sees only complete backups and keeps some; a keep from any policy wins.
4. The minimum-redundancy floor: while fewer than ``min_redundancy`` complete
   backups are kept (pinned ones count), the newest unkept complete backup is kept.
5. An incomplete backup (any status but "complete") is deleted once it is older than
   the newest complete backup *and* older than ``incomplete_grace``, so an attempt
   that may still be running is never removed under it. One newer than every complete
   backup is kept: it is the record of the latest failure.
6. A plan that keeps none of a cluster's complete backups is refused with
   :class:`~lifeboat.errors.OperationFailed` (only reachable with ``min_redundancy=0``);
   a cluster with no complete backup at all is not refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from lifeboat.errors import OperationFailed, UsageError
from lifeboat.retention.durations import format_duration
from lifeboat.retention.plan import BackupDecision, RetentionPlan, Verdict
from lifeboat.retention.policies import Policy
from lifeboat.retention.records import DAMAGED, BackupRecord, format_time

INCOMPLETE_GRACE = timedelta(hours=6)
"""Longer than any backup run should take; short enough to clean failures the same day."""


def evaluate(
    policies: Sequence[Policy],
    backups: Iterable[BackupRecord],
    now: datetime,
    *,
    min_redundancy: int = 1,
    incomplete_grace: timedelta = INCOMPLETE_GRACE,
) -> RetentionPlan:
    """Decide keep or delete, with reasons, for every backup; newest first.

    Backups of several clusters may be mixed: each cluster is judged on its own.
    """
    _check_arguments(policies, now, min_redundancy, incomplete_grace)
    now = now.astimezone(UTC)
    by_cluster: dict[str, list[BackupRecord]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for backup in backups:
        if (backup.cluster, backup.id) in seen:
            raise OperationFailed(
                f"backup {backup.cluster}/{backup.id} is listed twice; "
                "refusing to plan deletions from an inconsistent listing"
            )
        seen.add((backup.cluster, backup.id))
        by_cluster[backup.cluster].append(backup)
    decisions = [
        decision
        for cluster_backups in by_cluster.values()
        for decision in _evaluate_cluster(
            policies, cluster_backups, now, min_redundancy, incomplete_grace
        )
    ]
    decisions.sort(key=lambda d: (d.backup.taken_at, d.backup.cluster, d.backup.id), reverse=True)
    return RetentionPlan(
        now=now,
        policies=tuple(policy.spec for policy in policies),
        min_redundancy=min_redundancy,
        decisions=tuple(decisions),
    )


def _check_arguments(
    policies: Sequence[Policy], now: datetime, min_redundancy: int, grace: timedelta
) -> None:
    if not policies:
        raise UsageError("no retention policy given; set at least one, e.g. keep-last=7")
    if now.utcoffset() is None:
        raise UsageError(f"retention 'now' ({now.isoformat()}) has no time zone; pass a UTC time")
    if min_redundancy < 0:
        raise UsageError(f"min-redundancy={min_redundancy}: must be 0 or more")
    if grace < timedelta(0):
        raise UsageError(f"incomplete grace period {grace}: must not be negative")


def _evaluate_cluster(
    policies: Sequence[Policy],
    backups: list[BackupRecord],
    now: datetime,
    min_redundancy: int,
    grace: timedelta,
) -> list[BackupDecision]:
    backups = sorted(backups, key=lambda b: (b.taken_at, b.id), reverse=True)
    past = [b for b in backups if b.taken_at <= now]
    complete = [b for b in past if b.is_complete]
    keep: dict[str, list[str]] = defaultdict(list)
    for backup in backups:
        if backup.taken_at > now:
            keep[backup.id].append(
                f"taken at {format_time(backup.taken_at)}, after now ({format_time(now)}): "
                "clocks disagree, never deleted"
            )
        if backup.pinned:
            keep[backup.id].append("pinned")
    for policy in policies:
        for backup_id, reason in policy.keep(complete, now).items():
            keep[backup_id].append(reason)
    _apply_floor(complete, keep, min_redundancy)
    delete = _judge_incomplete(past, complete, keep, now, grace)
    if complete and not any(b.id in keep for b in complete):
        raise _refusal(complete, policies)
    return [
        BackupDecision(b, Verdict.KEEP, tuple(keep[b.id]))
        if b.id in keep
        else BackupDecision(b, Verdict.DELETE, (delete.get(b.id, "matched no policy"),))
        for b in backups
    ]


def _apply_floor(complete: list[BackupRecord], keep: dict[str, list[str]], floor: int) -> None:
    """Keep the newest unkept complete backups until ``floor`` complete ones are kept."""
    kept = sum(1 for backup in complete if backup.id in keep)
    for backup in complete:
        if kept >= floor:
            return
        if backup.id not in keep:
            keep[backup.id].append(f"minimum redundancy floor ({floor})")
            kept += 1


def _judge_incomplete(
    past: list[BackupRecord],
    complete: list[BackupRecord],
    keep: dict[str, list[str]],
    now: datetime,
    grace: timedelta,
) -> dict[str, str]:
    """Add keeps for incomplete backups that must stay; return delete reasons for the rest."""
    newest_complete = complete[0].taken_at if complete else None
    delete: dict[str, str] = {}
    for backup in past:
        if backup.is_complete or backup.id in keep:
            continue
        what = f"incomplete ({backup.status})"
        if backup.status == DAMAGED:  # its manifest says complete: nothing is running
            keep[backup.id].append(f"damaged: objects its manifest lists are missing or cut short, so it is not "
                                   f"counted as kept ('lifeboat verify {backup.id}' says what; newer than the "
                                   "backups kept in its place, it is not deleted)")
        elif now - backup.taken_at < grace:
            keep[backup.id].append(
                f"{what}, younger than the {format_duration(grace)} grace period: "
                "may still be running"
            )
        elif newest_complete is None or backup.taken_at > newest_complete:
            keep[backup.id].append(f"{what}, newer than every complete backup: the latest failure")
        else:
            delete[backup.id] = f"{what}, older than the newest complete backup"
    return delete


def _refusal(complete: list[BackupRecord], policies: Sequence[Policy]) -> OperationFailed:
    newest = complete[0]
    return OperationFailed(
        f"refusing to delete all {len(complete)} complete backups of cluster {newest.cluster} "
        f"(newest {newest.id}, taken {format_time(newest.taken_at)}): "
        f"{', '.join(p.spec for p in policies)} keep none of them; "
        "widen the policies or set min-redundancy to 1 or more"
    )
