"""Durations as operators write them in retention specs: ``36h``, ``7d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

from lifeboat.errors import UsageError

_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_DURATION = re.compile(r"(\d+)([hdw])")


def parse_duration(key: str, value: object) -> timedelta:
    """Parse ``<whole number><h|d|w>`` for the policy ``key``; zero is refused.

    Months and years are not accepted: they have no fixed length.
    """
    match = _DURATION.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match is None:
        raise UsageError(
            f"retention policy {key}={value}: not a duration; "
            f"write a whole number followed by h, d or w, e.g. {key}=7d"
        )
    duration = int(match.group(1)) * _UNITS[match.group(2)]
    if not duration:
        raise UsageError(f"retention policy {key}={value}: the duration must be longer than zero")
    return duration


def format_duration(duration: timedelta) -> str:
    """``duration`` in the largest of w, d, h that divides it, else in whole seconds."""
    for suffix, unit in (("w", _UNITS["w"]), ("d", _UNITS["d"]), ("h", _UNITS["h"])):
        if duration % unit == timedelta(0):
            return f"{duration // unit}{suffix}"
    return f"{int(duration.total_seconds())}s"
