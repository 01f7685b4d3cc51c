"""Shorthand for building backup records in retention tests."""

from __future__ import annotations

from datetime import UTC, datetime

from lifeboat.retention import BackupRecord

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    """``"2026-11-20 14:05"`` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def backup(
    backup_id: str,
    taken_at: datetime | str,
    *,
    status: str = "complete",
    pinned: bool = False,
    cluster: str = "prod",
    size: int = 1,
) -> BackupRecord:
    moment = at(taken_at) if isinstance(taken_at, str) else taken_at
    return BackupRecord(backup_id, cluster, moment, status, pinned=pinned, size=size)


def ids(records: object) -> list[str]:
    return [record.id for record in records]  # type: ignore[attr-defined]
