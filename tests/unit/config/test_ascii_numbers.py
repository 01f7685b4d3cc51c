"""Numbers in durations, sizes and counts are ASCII digits: Python's int() and float() also
read other scripts' digits ("٣٠" is 30), so a value that looks like nothing a person typed as a
number was taken as one."""

from __future__ import annotations

import pytest

from lifeboat.config.values import parse_bytes, parse_seconds, read_retention_duration
from lifeboat.errors import UsageError
from lifeboat.retention import parse_policies


@pytest.mark.parametrize("text", ["٣٠s", "３０s", "٣"])
def test_a_duration_in_other_digits_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_seconds(text)
    assert parse_seconds("30s") == 30.0


def test_sizes_retention_durations_and_counts_take_ascii_digits_only() -> None:
    with pytest.raises(ValueError):
        parse_bytes("١٦MiB")
    assert parse_bytes("16MiB") == 16 << 20
    assert read_retention_duration("٧d") is None and read_retention_duration("7d") is not None
    with pytest.raises(UsageError):
        parse_policies({"keep-last": "٣"})
    assert parse_policies({"keep-last": "3"})
