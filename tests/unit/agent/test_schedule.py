from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lifeboat.agent.schedule import check_cron, due_tick, latest_tick, next_run
from lifeboat.errors import UsageError

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc)
HOURLY = "0 * * * *"


@pytest.mark.parametrize(("cron", "now", "expected"), [
    ("*/5 * * * *", T0, T0 + timedelta(minutes=5)),
    ("*/5 * * * *", T0 + timedelta(seconds=1), T0 + timedelta(minutes=5)),
    ("0 3 * * *", T0, datetime(2024, 3, 2, 3, 0, tzinfo=timezone.utc)),
    ("0 0 1 * *", T0, datetime(2024, 4, 1, tzinfo=timezone.utc)),
])
def test_next_run_is_the_first_tick_strictly_after_now(cron: str, now: datetime, expected: datetime) -> None:
    assert next_run(cron, now) == expected


def test_next_run_of_a_non_utc_time_is_in_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert next_run(HOURLY, datetime(2024, 3, 1, 12, 30, tzinfo=plus2)) == T0 + timedelta(hours=1)


def test_a_tick_exactly_at_now_is_the_latest_tick() -> None:
    assert latest_tick(HOURLY, T0) == T0
    assert latest_tick(HOURLY, T0 - timedelta(seconds=1)) == T0 - timedelta(hours=1)


@pytest.mark.parametrize("cron", ["", "* * * *", "61 * * * *", "0 * * * * * *", "every hour", "0 25 * * *"])
def test_bad_cron_expression_is_a_usage_error_naming_the_setting(cron: str) -> None:
    with pytest.raises(UsageError, match="schedules.backup"):
        check_cron(cron, "schedules.backup")


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        next_run(HOURLY, datetime(2024, 1, 1))


def test_without_a_record_the_latest_tick_is_due_at_once() -> None:
    assert due_tick(HOURLY, T0 + timedelta(minutes=20), None) == T0


def test_recorded_tick_is_not_due_again() -> None:
    assert due_tick(HOURLY, T0 + timedelta(minutes=59), T0) is None
    assert due_tick(HOURLY, T0 + timedelta(hours=1), T0) == T0 + timedelta(hours=1)


def test_forward_jump_over_many_ticks_runs_the_newest_once() -> None:
    after_jump = T0 + timedelta(hours=5, minutes=10)
    tick = due_tick(HOURLY, after_jump, T0)
    assert tick == T0 + timedelta(hours=5)
    assert due_tick(HOURLY, after_jump + timedelta(minutes=1), tick) is None


def test_backward_jump_does_not_run_a_tick_twice() -> None:
    done = T0 + timedelta(hours=1)
    for back in (1, 30, 59, 65):
        assert due_tick(HOURLY, done + timedelta(minutes=5) - timedelta(minutes=back), done) is None


def test_backward_jump_beyond_the_tolerance_trusts_the_clock_over_the_record() -> None:
    done = T0 + timedelta(hours=1)
    assert due_tick(HOURLY, done - timedelta(minutes=90), done) == T0 - timedelta(hours=1)


def test_record_from_a_clock_far_ahead_does_not_stall_the_schedule() -> None:
    wrong_future = T0 + timedelta(days=30)
    assert due_tick(HOURLY, T0 + timedelta(minutes=3), wrong_future) == T0
