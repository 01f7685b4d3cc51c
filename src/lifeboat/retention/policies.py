"""The retention policy classes: each parses its own value and names the backups it keeps.

A policy only ever sees complete backups of one cluster taken at or before ``now``,
newest first, and answers with the ids it keeps and why. Everything else (pins,
incomplete backups, clock skew, the redundancy floor) is :func:`evaluate`'s business.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Self

from lifeboat.errors import UsageError
from lifeboat.retention.durations import format_duration, parse_duration
from lifeboat.retention.records import BackupRecord


class Policy(ABC):
    """One retention rule."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def parse(cls, value: object) -> Self:
        """Build the policy from the value in ``name=value``; a bad value is a UsageError."""

    @property
    @abstractmethod
    def value_text(self) -> str:
        """The value as an operator writes it: ``7``, ``36h``."""

    @property
    def spec(self) -> str:
        """``keep-last=7``: parses back to an equal policy."""
        return f"{self.name}={self.value_text}"

    @property
    def label(self) -> str:
        """``keep-last 7``: how reasons name the policy."""
        return f"{self.name} {self.value_text}"

    @abstractmethod
    def keep(self, backups: Sequence[BackupRecord], now: datetime) -> dict[str, str]:
        """Map the id of every backup this policy keeps to the reason.

        ``backups`` are complete, of one cluster, taken at or before ``now``, newest first.
        """


@dataclass(frozen=True)
class CountPolicy(Policy):
    """A policy whose value is a count of at least one."""

    count: int

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise _bad_count(self.name, self.count)

    @classmethod
    def parse(cls, value: object) -> Self:
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
            return cls(int(value.strip()))
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        raise _bad_count(cls.name, value)

    @property
    def value_text(self) -> str:
        return str(self.count)


def _bad_count(key: str, value: object) -> UsageError:
    return UsageError(
        f"retention policy {key}={value}: the count must be a whole number of at least 1, "
        f"e.g. {key}=7"
    )


@dataclass(frozen=True)
class DurationPolicy(Policy):
    """A policy whose value is a positive duration."""

    duration: timedelta

    def __post_init__(self) -> None:
        if self.duration <= timedelta(0):
            raise UsageError(
                f"retention policy {self.name}={format_duration(self.duration)}: "
                "the duration must be longer than zero"
            )

    @classmethod
    def parse(cls, value: object) -> Self:
        return cls(parse_duration(cls.name, value))

    @property
    def value_text(self) -> str:
        return format_duration(self.duration)


@dataclass(frozen=True)
class KeepLast(CountPolicy):
    """Keep the ``count`` newest complete backups."""

    name: ClassVar[str] = "keep-last"

    def keep(self, backups: Sequence[BackupRecord], now: datetime) -> dict[str, str]:
        reason = f"newest {self.count} ({self.label})"
        return {backup.id: reason for backup in backups[: self.count]}


@dataclass(frozen=True)
class KeepWithin(DurationPolicy):
    """Keep every complete backup taken at or after ``now - duration``."""

    name: ClassVar[str] = "keep-within"

    def keep(self, backups: Sequence[BackupRecord], now: datetime) -> dict[str, str]:
        start = now - self.duration
        reason = f"taken within the last {self.value_text} ({self.label})"
        return {backup.id: reason for backup in backups if backup.taken_at >= start}


@dataclass(frozen=True)
class RecoveryWindow(DurationPolicy):
    """Barman's recovery window: every state inside the window must stay restorable.

    Keeps every complete backup taken at or after ``now - duration`` and, in
    addition, the newest one taken before that instant: restoring to a moment
    early in the window needs the last backup taken before it. That extra backup
    is kept even when another backup sits exactly on the window's edge.
    """

    name: ClassVar[str] = "recovery-window"

    def keep(self, backups: Sequence[BackupRecord], now: datetime) -> dict[str, str]:
        start = now - self.duration
        window = f"recovery window ({self.value_text})"
        kept = {b.id: f"inside the {window}" for b in backups if b.taken_at >= start}
        older = [b for b in backups if b.taken_at < start]
        if older:
            kept[older[0].id] = (
                f"newest backup older than the {window} — needed to recover to any point in it"
            )
        return kept
