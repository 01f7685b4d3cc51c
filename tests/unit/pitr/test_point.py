"""Finding a point in time against the repository's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lifeboat.catalog.repository import BackupRepository
from lifeboat.clock import FakeClock
from lifeboat.errors import UsageError
from lifeboat.pitr import PointTarget, find_point
from lifeboat.store.memory import MemoryStore

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def test_a_time_after_the_repository_clock_is_refused_as_in_the_future() -> None:
    repo = BackupRepository.open(MemoryStore(), create=True, clock=FakeClock(NOW))
    with pytest.raises(UsageError, match=r"in the future \(now is 2026-12-01T03:00:00"):
        find_point(repo, "prod", PointTarget(moment=NOW + timedelta(seconds=1)), None)
    with pytest.raises(UsageError, match="cannot be restored: cluster prod has no complete backup"):
        find_point(repo, "prod", PointTarget(moment=NOW), None)
