"""Durations as operators write them in retention specs: ``36h``, ``7d``, ``2w``.

The grammar is the config's (:func:`lifeboat.config.values.read_retention_duration`): a spec
on the command line and one in the config file accept exactly the same durations.
"""

from __future__ import annotations

from datetime import timedelta

from lifeboat.config.values import RETENTION_DURATION_UNITS, read_retention_duration
from lifeboat.errors import UsageError


def parse_duration(key: str, value: object) -> timedelta:
    """Parse ``<whole number><h|d|w>`` for the policy ``key``; zero is refused."""
    try:
        duration = read_retention_duration(value)
    except ValueError as exc:
        raise UsageError(f"retention policy {key}={value}: {exc}") from None
    if duration is None:
        raise UsageError(
            f"retention policy {key}={value}: not a duration; "
            f"write a whole number followed by h, d or w, e.g. {key}=7d"
        )
    if not duration:
        raise UsageError(f"retention policy {key}={value}: the duration must be longer than zero")
    return duration


def format_duration(duration: timedelta) -> str:
    """``duration`` in the largest of w, d, h that divides it, else in whole seconds."""
    for suffix in ("w", "d", "h"):
        unit = RETENTION_DURATION_UNITS[suffix]
        if duration % unit == timedelta(0):
            return f"{duration // unit}{suffix}"
    return f"{int(duration.total_seconds())}s"
