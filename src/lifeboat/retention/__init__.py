"""Retention: which backups to keep and why, as a pure function of backups, policies and now.

``evaluate(parse_policies("keep-last=7,keep-daily=7"), backups, now)`` returns a
:class:`RetentionPlan` with a verdict and a human reason for every backup; planning does no
I/O. The executor beside it, :mod:`lifeboat.retention.prune`, applies that same plan to a
repository (and removes uncommitted leftovers).
"""

from lifeboat.retention.durations import format_duration, parse_duration
from lifeboat.retention.evaluate import INCOMPLETE_GRACE, evaluate
from lifeboat.retention.periodic import (
    KeepDaily,
    KeepHourly,
    KeepMonthly,
    KeepWeekly,
    KeepYearly,
    PeriodicPolicy,
)
from lifeboat.retention.plan import BackupDecision, RetentionPlan, Verdict
from lifeboat.retention.policies import (
    CountPolicy,
    DurationPolicy,
    KeepLast,
    KeepWithin,
    Policy,
    RecoveryWindow,
)
from lifeboat.retention.records import COMPLETE, BackupRecord
from lifeboat.retention.spec import POLICY_CLASSES, parse_policies, parse_policy, policy_from

__all__ = [
    "COMPLETE",
    "INCOMPLETE_GRACE",
    "POLICY_CLASSES",
    "BackupDecision",
    "BackupRecord",
    "CountPolicy",
    "DurationPolicy",
    "KeepDaily",
    "KeepHourly",
    "KeepLast",
    "KeepMonthly",
    "KeepWeekly",
    "KeepWithin",
    "KeepYearly",
    "PeriodicPolicy",
    "Policy",
    "RecoveryWindow",
    "RetentionPlan",
    "Verdict",
    "evaluate",
    "format_duration",
    "parse_duration",
    "parse_policies",
    "parse_policy",
    "policy_from",
]
