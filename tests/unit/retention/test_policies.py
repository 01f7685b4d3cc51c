"""Table tests for each policy on its own, at the edges of its windows and periods."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest

from lifeboat.retention import (
    BackupRecord,
    KeepDaily,
    KeepHourly,
    KeepLast,
    KeepMonthly,
    KeepWeekly,
    KeepWithin,
    KeepYearly,
    Policy,
    RecoveryWindow,
)
from tests.unit.retention.backups import NOW, at, backup


def kept(policy: Policy, times: Sequence[str | datetime], now: datetime = NOW) -> dict[str, str]:
    """Run ``policy`` on complete backups named by their times; answer {time: reason}."""
    records = [backup(str(t), t) for t in times]
    newest_first = sorted(records, key=lambda b: b.taken_at, reverse=True)
    return policy.keep(newest_first, now)


def ago(**kwargs: float) -> datetime:
    return NOW - timedelta(**kwargs)


def test_keep_last_keeps_the_newest_n() -> None:
    times = [ago(hours=h) for h in (1, 2, 3, 4, 5)]
    assert set(kept(KeepLast(2), times)) == {str(ago(hours=1)), str(ago(hours=2))}


def test_keep_last_keeps_everything_when_fewer_than_n_exist() -> None:
    times = [ago(days=d) for d in (1, 400)]
    assert set(kept(KeepLast(7), times)) == {str(t) for t in times}


def test_keep_last_reason_names_the_policy() -> None:
    assert kept(KeepLast(7), [ago(hours=1)]) == {str(ago(hours=1)): "newest 7 (keep-last 7)"}


@pytest.mark.parametrize(
    ("age", "is_kept"),
    [
        (timedelta(0), True),
        (timedelta(hours=35, minutes=59), True),
        (timedelta(hours=36), True),  # exactly on the edge: inside
        (timedelta(hours=36, seconds=1), False),
        (timedelta(days=30), False),
    ],
)
def test_keep_within_keeps_backups_up_to_and_on_its_edge(age: timedelta, is_kept: bool) -> None:
    assert bool(kept(KeepWithin(timedelta(hours=36)), [NOW - age])) is is_kept


def test_keep_within_keeps_nothing_when_every_backup_is_older() -> None:
    assert kept(KeepWithin(timedelta(days=1)), [ago(days=2), ago(days=3)]) == {}


def test_recovery_window_keeps_all_inside_and_the_newest_before_it() -> None:
    times = [ago(days=1), ago(days=6), ago(days=8), ago(days=9), ago(days=30)]
    result = kept(RecoveryWindow(timedelta(days=7)), times)
    assert set(result) == {str(ago(days=1)), str(ago(days=6)), str(ago(days=8))}
    assert result[str(ago(days=1))] == "inside the recovery window (1w)"
    assert result[str(ago(days=8))] == (
        "newest backup older than the recovery window (1w) — needed to recover to any point in it"
    )


def test_recovery_window_backup_on_the_edge_is_inside_and_the_one_before_still_kept() -> None:
    times = [ago(days=7), ago(days=7, seconds=1), ago(days=8)]
    result = kept(RecoveryWindow(timedelta(days=7)), times)
    assert set(result) == {str(ago(days=7)), str(ago(days=7, seconds=1))}
    assert result[str(ago(days=7))].startswith("inside")


def test_recovery_window_with_every_backup_older_keeps_only_the_newest() -> None:
    times = [ago(days=10), ago(days=20), ago(days=30)]
    assert set(kept(RecoveryWindow(timedelta(days=7)), times)) == {str(ago(days=10))}


def test_recovery_window_with_nothing_older_keeps_only_the_window() -> None:
    times = [ago(hours=1), ago(days=2)]
    assert set(kept(RecoveryWindow(timedelta(days=7)), times)) == {str(t) for t in times}


@pytest.mark.parametrize(
    ("policy", "times", "expected"),
    [
        # Two backups in the same UTC hour: only the later one; 11:59:59 is the previous hour.
        (
            KeepHourly(3),
            ["2026-11-22 11:10", "2026-11-22 11:50", "2026-11-22 11:59:59", "2026-11-22 10:00"],
            {"2026-11-22 11:59:59": "hourly 2026-11-22 11:00Z (keep-hourly 3)",
             "2026-11-22 10:00": "hourly 2026-11-22 10:00Z (keep-hourly 3)"},
        ),
        # Midnight UTC starts a new day.
        (
            KeepDaily(2),
            ["2026-11-21 23:59:59", "2026-11-22 00:00", "2026-11-21 08:00", "2026-11-20 23:00"],
            {"2026-11-22 00:00": "daily 2026-11-22 (keep-daily 2)",
             "2026-11-21 23:59:59": "daily 2026-11-21 (keep-daily 2)"},
        ),
        # Days without a backup do not count: the 2 most recent days that have one.
        (
            KeepDaily(2),
            ["2026-11-22 01:00", "2026-11-10 01:00", "2026-11-01 01:00"],
            {"2026-11-22 01:00": "daily 2026-11-22 (keep-daily 2)",
             "2026-11-10 01:00": "daily 2026-11-10 (keep-daily 2)"},
        ),
        # ISO weeks run Monday to Sunday: Sunday 2026-11-22 and Monday 2026-11-16 share W47.
        (
            KeepWeekly(2),
            ["2026-11-22 23:00", "2026-11-16 00:00", "2026-11-15 23:59", "2026-11-09 00:00"],
            {"2026-11-22 23:00": "weekly 2026-W47 (keep-weekly 2)",
             "2026-11-15 23:59": "weekly 2026-W46 (keep-weekly 2)"},
        ),
        # 2020-12-31 and 2021-01-03 are both in ISO week 2020-W53.
        (
            KeepWeekly(2),
            ["2021-01-04 00:00", "2021-01-03 10:00", "2020-12-31 10:00"],
            {"2021-01-04 00:00": "weekly 2021-W01 (keep-weekly 2)",
             "2021-01-03 10:00": "weekly 2020-W53 (keep-weekly 2)"},
        ),
        # Month boundaries, including a leap day.
        (
            KeepMonthly(3),
            ["2028-03-01 00:00", "2028-02-29 23:59", "2028-02-01 00:00", "2028-01-31 23:59",
             "2027-12-31 12:00"],
            {"2028-03-01 00:00": "monthly 2028-03 (keep-monthly 3)",
             "2028-02-29 23:59": "monthly 2028-02 (keep-monthly 3)",
             "2028-01-31 23:59": "monthly 2028-01 (keep-monthly 3)"},
        ),
        # Calendar years, not ISO years: 2021-01-03 is in 2021 though its ISO week is 2020's.
        (
            KeepYearly(5),
            ["2021-01-03 10:00", "2020-12-31 23:59:59", "2020-06-01 00:00", "2018-01-01 00:00"],
            {"2021-01-03 10:00": "yearly 2021 (keep-yearly 5)",
             "2020-12-31 23:59:59": "yearly 2020 (keep-yearly 5)",
             "2018-01-01 00:00": "yearly 2018 (keep-yearly 5)"},
        ),
    ],
    ids=["hourly", "daily-midnight", "daily-gaps", "weekly-iso", "weekly-year-end", "monthly",
         "yearly"],
)
def test_periodic_policy_keeps_newest_backup_of_each_recent_period(
    policy: Policy, times: list[str], expected: dict[str, str]
) -> None:
    result = kept(policy, [at(t) for t in times], now=at("2030-01-01 00:00"))
    assert result == {str(at(t)): reason for t, reason in expected.items()}


def test_periodic_policy_periods_are_utc_whatever_zone_the_record_came_in() -> None:
    # 01:30 at UTC+2 on the 22nd is 23:30 UTC on the 21st.
    plus_two = timezone(timedelta(hours=2))
    record = BackupRecord("x", "prod", datetime(2026, 11, 22, 1, 30, tzinfo=plus_two), "complete")
    assert KeepDaily(1).keep([record], NOW) == {"x": "daily 2026-11-21 (keep-daily 1)"}


def test_periodic_policy_with_n_larger_than_periods_keeps_one_per_period() -> None:
    times = [ago(hours=h) for h in range(0, 72, 6)]
    assert len(kept(KeepDaily(30), times)) == len({t.date() for t in times})
