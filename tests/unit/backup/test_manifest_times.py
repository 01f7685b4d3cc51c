"""A backup's manifest keeps its times to the millisecond: the timeline starts a chain's window
at its base's finish, and a time before that may not be restored to the base's revision."""

from __future__ import annotations

from datetime import UTC, datetime

from lifeboat.backup import pipeline


def test_a_backups_times_are_written_to_the_millisecond() -> None:
    finished = datetime(2026, 12, 4, 12, 42, 11, 443_812, tzinfo=UTC)
    assert pipeline._rfc3339(finished) == "2026-12-04T12:42:11.443Z"

