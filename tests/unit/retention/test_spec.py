from __future__ import annotations

from datetime import timedelta

import pytest

from lifeboat.errors import UsageError
from lifeboat.retention import (
    KeepDaily,
    KeepHourly,
    KeepLast,
    KeepMonthly,
    KeepWeekly,
    KeepWithin,
    KeepYearly,
    RecoveryWindow,
    format_duration,
    parse_duration,
    parse_policies,
    parse_policy,
)


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("keep-last=7", KeepLast(7)),
        ("keep-within=36h", KeepWithin(timedelta(hours=36))),
        ("keep-hourly=24", KeepHourly(24)),
        ("keep-daily=7", KeepDaily(7)),
        ("keep-weekly=4", KeepWeekly(4)),
        ("keep-monthly=12", KeepMonthly(12)),
        ("keep-yearly=3", KeepYearly(3)),
        ("recovery-window=7d", RecoveryWindow(timedelta(days=7))),
        ("recovery-window=2w", RecoveryWindow(timedelta(weeks=2))),
        (" keep_last = 7 ", KeepLast(7)),
        ("KEEP-DAILY=7", KeepDaily(7)),
    ],
)
def test_spec_text_parses_to_policy(text: str, policy: object) -> None:
    assert parse_policy(text) == policy


@pytest.mark.parametrize(
    "spec",
    ["keep-last=7", "keep-within=36h", "keep-weekly=4", "recovery-window=2w", "keep-within=8d"],
)
def test_policy_spec_round_trips(spec: str) -> None:
    assert parse_policy(spec).spec == spec


def test_mapping_form_gives_policies_in_order() -> None:
    policies = parse_policies({"keep-last": 7, "keep-daily": "7", "recovery-window": "7d"})
    assert policies == [KeepLast(7), KeepDaily(7), RecoveryWindow(timedelta(days=7))]


def test_comma_separated_form_gives_policies_in_order() -> None:
    assert parse_policies("keep-last=3, keep-weekly=2,") == [KeepLast(3), KeepWeekly(2)]


def test_list_form_gives_policies_in_order() -> None:
    assert parse_policies(["keep-yearly=1", "keep-within=2w"]) == [
        KeepYearly(1),
        KeepWithin(timedelta(weeks=2)),
    ]


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("keep-last", -1, "keep-last=-1"),
        ("keep-last", 0, "keep-last=0"),
        ("keep-daily", "0", "keep-daily=0"),
        ("keep-daily", "seven", "keep-daily=seven"),
        ("keep-weekly", 2.5, "keep-weekly=2.5"),
        ("keep-monthly", True, "keep-monthly=True"),
        ("keep-yearly", None, "keep-yearly=None"),
        ("keep-within", "0h", "keep-within=0h"),
        ("keep-within", "7", "keep-within=7:"),
        ("recovery-window", "7x", "recovery-window=7x"),
        ("recovery-window", "-7d", "recovery-window=-7d"),
        ("recovery-window", "1 month", "recovery-window=1 month"),
        ("recovery-window", 7, "recovery-window=7"),
        ("keep-forever", 1, "keep-forever=1"),
    ],
)
def test_bad_spec_is_a_usage_error_naming_key_and_value(
    key: str, value: object, named: str
) -> None:
    with pytest.raises(UsageError) as caught:
        parse_policies({key: value})
    assert named in str(caught.value)


@pytest.mark.parametrize("text", ["keep-last", "=7", "", "keep-last:7"])
def test_spec_without_name_and_value_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="name=value"):
        parse_policy(text)


@pytest.mark.parametrize("setting", ["", " , ", [], {}])
def test_empty_setting_is_refused(setting: object) -> None:
    with pytest.raises(UsageError, match="no retention policy"):
        parse_policies(setting)  # type: ignore[arg-type]


def test_policy_named_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="keep-last is given more than once"):
        parse_policies({"keep-last": 7, "keep_last": 3})


def test_constructing_a_policy_directly_validates_it() -> None:
    with pytest.raises(UsageError, match="keep-last=0"):
        KeepLast(0)
    with pytest.raises(UsageError, match="recovery-window"):
        RecoveryWindow(timedelta(0))


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("36h", timedelta(hours=36)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1H", timedelta(hours=1)),
    ],
)
def test_duration_parses(text: str, duration: timedelta) -> None:
    assert parse_duration("keep-within", text) == duration


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(hours=36), "36h"),
        (timedelta(days=7), "1w"),
        (timedelta(days=8), "8d"),
        (timedelta(minutes=90), "5400s"),
    ],
)
def test_duration_formats_in_largest_whole_unit(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text
