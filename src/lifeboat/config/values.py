"""Value types of the config file: durations, retention durations, cron expressions.

Each parser raises ``ValueError`` with a message written for operators; the loader puts
the file name and key path in front of it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter
from pydantic import AfterValidator, BeforeValidator

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# The retention package's own syntax (lifeboat.retention.durations), checked here too so a
# bad value fails when the file is loaded rather than at the first prune.
_RETENTION_DURATION = re.compile(r"(\d+)([hdw])")


def parse_seconds(value: object) -> float:
    """``5``, ``2.5``, ``500ms``, ``30s``, ``10m``, ``1h``, ``7d`` as seconds (more than 0)."""
    if isinstance(value, bool):
        raise ValueError(f"must be a duration such as 30s or 5m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip().lower())):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    else:
        raise ValueError(f"must be a duration such as 30s, 5m or 1h, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be longer than zero, got {value!r}")
    return seconds


def check_retention_duration(value: object) -> str:
    """A retention duration: a whole number followed by h, d or w (``36h``, ``7d``, ``2w``)."""
    if not isinstance(value, str) or not (match := _RETENTION_DURATION.fullmatch(value.strip().lower())):
        raise ValueError(f"must be a whole number followed by h, d or w (e.g. 7d), got {value!r}")
    if int(match.group(1)) == 0:
        raise ValueError(f"must be longer than zero, got {value!r}")
    return value.strip().lower()


def check_positive_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def check_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number of 0 or more, got {value!r}")
    return value


def check_cron(value: object) -> str:
    """A five-field cron expression (minute hour day-of-month month day-of-week), or @daily etc."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a cron expression such as '0 3 * * *', got {value!r}")
    text = " ".join(value.split())
    if not text.startswith("@") and len(text.split()) != 5:
        raise ValueError(
            f"must be a cron expression of five fields (minute hour day month weekday), got {value!r}"
        )
    try:
        croniter(text)
    except (CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, ValueError, KeyError):
        raise ValueError(f"is not a valid cron expression: {value!r}") from None
    return text


def next_run(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that the cron ``expression`` matches.

    ``after`` must be timezone-aware; the expression is read in that time zone (pass UTC
    to get the schedule in UTC, which is what the agent does).
    """
    if after.utcoffset() is None:
        raise ValueError("next_run needs a timezone-aware datetime")
    found: datetime = croniter(expression, after).get_next(datetime)
    return found


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Seconds = Annotated[float, BeforeValidator(parse_seconds)]
RetentionDuration = Annotated[str, BeforeValidator(check_retention_duration)]
PositiveCount = Annotated[int, BeforeValidator(check_positive_count)]
Count = Annotated[int, BeforeValidator(check_count)]
CronExpression = Annotated[str, BeforeValidator(check_cron)]
CommaList = Annotated[list[str], BeforeValidator(_comma_list)]


def _no_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonBlank = Annotated[str, AfterValidator(_no_blank)]


def as_timedelta(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)
