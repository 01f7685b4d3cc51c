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

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from lifeboat.retention.policies import CountPolicy
from lifeboat.retention.records import BackupRecord


@dataclass(frozen=True)
class PeriodicPolicy(CountPolicy):
    """Keep the newest complete backup of each of the ``count`` most recent periods."""

    adjective: ClassVar[str]

    @staticmethod
    @abstractmethod
    def period(moment: datetime) -> str:
        """The period ``moment`` (UTC) falls in, as shown to operators; later periods differ."""

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


@dataclass(frozen=True)
class KeepHourly(PeriodicPolicy):
    """Newest backup of each of the last ``count`` UTC hours that have one."""

    name: ClassVar[str] = "keep-hourly"
    adjective: ClassVar[str] = "hourly"

    @staticmethod
    def period(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%d %H:00Z")


@dataclass(frozen=True)
class KeepDaily(PeriodicPolicy):
    """Newest backup of each of the last ``count`` UTC days that have one."""

    name: ClassVar[str] = "keep-daily"
    adjective: ClassVar[str] = "daily"

    @staticmethod
    def period(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%d")


@dataclass(frozen=True)
class KeepWeekly(PeriodicPolicy):
    """Newest backup of each of the last ``count`` ISO weeks that have one."""

    name: ClassVar[str] = "keep-weekly"
    adjective: ClassVar[str] = "weekly"

    @staticmethod
    def period(moment: datetime) -> str:
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"


@dataclass(frozen=True)
class KeepMonthly(PeriodicPolicy):
    """Newest backup of each of the last ``count`` UTC months that have one."""

    name: ClassVar[str] = "keep-monthly"
    adjective: ClassVar[str] = "monthly"

    @staticmethod
    def period(moment: datetime) -> str:
        return moment.strftime("%Y-%m")


@dataclass(frozen=True)
class KeepYearly(PeriodicPolicy):
    """Newest backup of each of the last ``count`` UTC years that have one."""

    name: ClassVar[str] = "keep-yearly"
    adjective: ClassVar[str] = "yearly"

    @staticmethod
    def period(moment: datetime) -> str:
        return f"{moment.year:04d}"
