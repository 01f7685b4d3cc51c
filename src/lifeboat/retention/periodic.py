"""Grandfather-father-son policies: the newest backup of each recent calendar period.

``keep-daily=n`` (and hourly, weekly, monthly, yearly alike) is defined as: group the
complete backups by calendar period in UTC, take the ``n`` most recent periods that
contain at least one backup (empty periods do not count and are not filled), and keep
the newest backup of each. Weeks are ISO 8601 weeks: Monday to Sunday, numbered in the
ISO year, so 2027-01-01 (a Friday) is in week 2026-W53. The policies
are independent: a backup kept as the newest of its day and of its week is kept once
with both reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from lifeboat.retention.policies import CountPolicy
from lifeboat.retention.records import BackupRecord


@dataclass(frozen=True)
class PeriodicPolicy(CountPolicy):
    """Keep the newest complete backup of each of the ``count`` most recent periods.

    A subclass names itself and its period in its class line, e.g.
    ``class KeepDaily(PeriodicPolicy, name="keep-daily", adjective="daily", period_format="%Y-%m-%d")``;
    ``period_format`` is a ``strftime`` format that labels a UTC moment's period.
    """

    adjective: ClassVar[str]
    period_format: ClassVar[str]

    def __init_subclass__(cls, *, name: str, adjective: str, period_format: str) -> None:
        super().__init_subclass__()
        cls.name, cls.adjective, cls.period_format = name, adjective, period_format

    def period(self, moment: datetime) -> str:
        """The period ``moment`` (UTC) falls in, as shown to operators; later periods differ."""
        return moment.strftime(self.period_format)

    def keep(self, backups: Sequence[BackupRecord], now: datetime) -> dict[str, str]:
        newest_of: dict[str, BackupRecord] = {}
        # Newest first, so the first backup seen in a period is its newest, and periods
        # appear newest first too: period labels only ever move back in time.
        for backup in backups:
            period = self.period(backup.taken_at)
            if period in newest_of:
                continue
            if len(newest_of) == self.count:
                break
            newest_of[period] = backup
        return {
            backup.id: f"{self.adjective} {period} ({self.label})"
            for period, backup in newest_of.items()
        }


class KeepHourly(PeriodicPolicy, name="keep-hourly", adjective="hourly", period_format="%Y-%m-%d %H:00Z"):
    """Newest backup of each of the last ``count`` UTC hours that have one."""


class KeepDaily(PeriodicPolicy, name="keep-daily", adjective="daily", period_format="%Y-%m-%d"):
    """Newest backup of each of the last ``count`` UTC days that have one."""


class KeepWeekly(PeriodicPolicy, name="keep-weekly", adjective="weekly", period_format="%G-W%V"):
    """Newest backup of each of the last ``count`` ISO weeks that have one (ISO year, week number)."""


class KeepMonthly(PeriodicPolicy, name="keep-monthly", adjective="monthly", period_format="%Y-%m"):
    """Newest backup of each of the last ``count`` UTC months that have one."""


class KeepYearly(PeriodicPolicy, name="keep-yearly", adjective="yearly", period_format="%Y"):
    """Newest backup of each of the last ``count`` UTC years that have one."""
