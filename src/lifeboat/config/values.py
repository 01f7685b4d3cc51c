"""Value types of the config file: durations, retention durations, cron expressions.

Each parser raises ``ValueError`` with a message written for operators; the loader puts
the file name and key path in front of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import PurePath
from typing import Annotated

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter
from pydantic import AfterValidator, BeforeValidator

from lifeboat.config.rules import LONGEST_DURATION, check_endpoint_url, names_recipients_file, not_absolute
from lifeboat.config.secrets import shown

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)?", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# The retention package's own syntax (lifeboat.retention.durations), checked here too so a
# bad value fails when the file is loaded rather than at the first prune.
_RETENTION_DURATION = re.compile(r"([0-9]+)([hdw])", re.ASCII)



def parse_seconds(value: object) -> float:
    """``5``, ``2.5``, ``500ms``, ``30s``, ``10m``, ``1h``, ``7d`` as seconds (more than 0, at most a century)."""
    seconds = float(_positive_amount(value, float, _DURATION, _UNIT_SECONDS, "s",
                                     "a duration such as 30s, 5m or 1h", "longer than zero"))
    _check_not_too_long(seconds, value)
    return seconds


def parse_wait(value: object) -> float:
    """A waiting time as :func:`parse_seconds` reads it, or none at all: ``0``, ``0s``."""
    text = value.strip().lower() if isinstance(value, str) else None
    if (value == 0 and not isinstance(value, bool)) or (
            text is not None and (match := _DURATION.fullmatch(text)) and float(match.group(1)) == 0):
        return 0.0
    return parse_seconds(value)


def _check_not_too_long(seconds: float, value: object) -> None:
    if not seconds <= LONGEST_DURATION.total_seconds():  # also refuses nan
        raise ValueError(f"must be at most {LONGEST_DURATION.days // 365} years, got {shown(value)}")


def _positive_amount(value: object, kind: type[int] | type[float], pattern: re.Pattern[str],
                     units: Mapping[str, int | float], default_unit: str, example: str, zero: str) -> int | float:
    """``value`` in its smallest unit: a bare ``kind``, or digits and one of ``units``; ValueError unless > 0."""
    if isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool):
        amount = kind(value)
    elif isinstance(value, str) and (match := pattern.fullmatch(value.strip().lower())):
        amount = kind(match.group(1)) * units[match.group(2) or default_unit]
    else:
        raise ValueError(f"must be {example}, got {shown(value)}")
    if amount <= 0:
        raise ValueError(f"must be {zero}, got {shown(value)}")
    return amount


_PORT = re.compile(r"[0-9]{1,5}")  # ASCII only: str.isdigit() also takes "٣٣", which int() reads as 33


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, or ``[ADDRESS]:PORT`` for IPv6, as (host, port); the host is "" for ``:PORT``."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        bad_host = ":" not in host
    else:
        bad_host = ":" in host or "[" in host or "]" in host
    if not sep or bad_host or not _PORT.fullmatch(port) or int(port) > 65535:
        raise ValueError(f"must be HOST:PORT ([ADDRESS]:PORT for IPv6), e.g. 0.0.0.0:9847 or [::]:9847, got {shown(value)}")
    return host, int(port)


_SIZE = re.compile(r"([0-9]+)\s*(b|kib|mib|gib|kb|mb|gb)?", re.ASCII)
_UNIT_BYTES = {"b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 1000, "mb": 10**6, "gb": 10**9}


def parse_bytes(value: object) -> int:
    """``4096``, ``512KiB``, ``16MiB``, ``1GiB`` (or kB/MB/GB) as a number of bytes (more than 0)."""
    return int(_positive_amount(value, int, _SIZE, _UNIT_BYTES, "b",
                                "a size such as 16MiB or 1GiB", "more than zero bytes"))


RETENTION_DURATION_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def read_retention_duration(value: object) -> timedelta | None:
    """``36h``, ``7d``, ``2w`` (a whole number and h, d or w) as a timedelta; None if not so written.

    Months and years are not accepted: they have no fixed length. Longer than
    :data:`LONGEST_DURATION` is a ValueError.
    """
    match = _RETENTION_DURATION.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if not match:
        return None
    count, unit = int(match.group(1)), RETENTION_DURATION_UNITS[match.group(2)]
    if count > LONGEST_DURATION // unit:
        _check_not_too_long(float("inf"), value)
    return count * unit


# The shortest orphan grace lifeboat accepts. A backup still being written looks exactly like
# the leftovers of an interrupted one: its objects become visible one by one as each upload
# completes, and its manifest follows once the rest is stored (the control-plane archive, from
# seconds to minutes). Their age is read from the time the store stamped on them, by a clock
# that may be minutes off the pruning host's. An hour covers both.
MIN_ORPHAN_GRACE = 3600.0


def check_orphan_grace(seconds: float) -> float:
    """``seconds`` if it is a safe orphan grace (at least :data:`MIN_ORPHAN_GRACE`), else ValueError."""
    if seconds < MIN_ORPHAN_GRACE:
        raise ValueError(
            f"{seconds:g}s is shorter than the minimum of {MIN_ORPHAN_GRACE / 3600:g}h: a backup still "
            "being written has no manifest yet, so a shorter grace could remove objects of a backup "
            "that is about to commit"
        )
    return seconds


def check_retention_duration(value: object) -> str:
    """A retention duration: a whole number followed by h, d or w (``36h``, ``7d``, ``2w``)."""
    duration = read_retention_duration(value)
    if duration is None or not isinstance(value, str):
        raise ValueError(f"must be a whole number followed by h, d or w (e.g. 7d), got {shown(value)}")
    if not duration:
        raise ValueError(f"must be longer than zero, got {shown(value)}")
    return value.strip().lower()


def check_positive_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a positive integer, got {shown(value)}")
    return value


def check_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number of 0 or more, got {shown(value)}")
    return value


# The nicknames cron (crontab(5)) and croniter both know, as the five fields each stands for.
# @reboot is left out: it names no time, and the agent has no boot to run at.
CRON_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_PROBE = datetime(2000, 1, 1, tzinfo=timezone.utc)


def cron_fields(value: object) -> str:
    """The five fields of a cron schedule: five fields as given, or one of :data:`CRON_NICKNAMES`.

    The one cron rule of lifeboat: ``config validate`` and the agent both call it, so a
    schedule one accepts the other runs. A schedule that never fires (``0 0 31 2 *``) is
    refused too. Raises ``ValueError`` with a message for operators.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a cron expression such as '0 3 * * *' or '@daily', got {shown(value)}")
    text = " ".join(value.split())
    if text.startswith("@"):
        if text.lower() not in CRON_NICKNAMES:
            raise ValueError(f"{shown(value)} is not a cron nickname; use one of "
                             f"{', '.join(CRON_NICKNAMES)} or five fields")
        return CRON_NICKNAMES[text.lower()]
    if len(text.split()) != 5:
        raise ValueError(
            f"must be a cron expression of five fields (minute hour day month weekday), got {shown(value)}"
        )
    try:
        croniter(text, _CRON_PROBE).get_next(datetime)
    except (CroniterBadCronError, CroniterNotAlphaError, ValueError, KeyError):
        raise ValueError(f"is not a valid cron expression: {shown(value)}") from None
    except CroniterBadDateError:
        raise ValueError(f"never fires: {shown(value)}") from None
    return text


def check_cron(value: object) -> str:
    """A cron schedule as the user wrote it (spaces collapsed), once :func:`cron_fields` accepts it."""
    cron_fields(value)
    assert isinstance(value, str)
    return " ".join(value.split())


def next_run(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that the cron ``expression`` matches.

    ``after`` must be timezone-aware; the expression is read in that time zone (pass UTC
    to get the schedule in UTC, which is what the agent does).
    """
    if after.utcoffset() is None:
        raise ValueError("next_run needs a timezone-aware datetime")
    found: datetime = croniter(cron_fields(expression), after).get_next(datetime)
    return found


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Seconds = Annotated[float, BeforeValidator(parse_seconds)]
Wait = Annotated[float, BeforeValidator(parse_wait)]
OrphanGrace = Annotated[float, BeforeValidator(parse_seconds), AfterValidator(check_orphan_grace)]
RetentionDuration = Annotated[str, BeforeValidator(check_retention_duration)]
PositiveCount = Annotated[int, BeforeValidator(check_positive_count)]
Count = Annotated[int, BeforeValidator(check_count)]
CronExpression = Annotated[str, BeforeValidator(check_cron)]
ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
CommaList = Annotated[list[str], BeforeValidator(_comma_list)]


def _no_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonBlank = Annotated[str, AfterValidator(_no_blank)]


def absolute(example: str, *, show: bool = True) -> BeforeValidator:
    """A path key's rule: an absolute path (``example`` is one the message offers); see
    :func:`~lifeboat.config.rules.not_absolute`."""
    def check(value: object) -> object:
        if isinstance(value, str | PurePath):
            problem = not_absolute(str(value), example, show=show)
            if problem is not None:
                raise ValueError(problem)
        return value
    return BeforeValidator(check)
EndpointUrl = Annotated[str, AfterValidator(check_endpoint_url)]


def as_timedelta(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def recipients_file_absolute(value: str) -> str:
    """A recipient that names a file names it by absolute path, as :func:`absolute` asks of every path."""
    if names_recipients_file(value) and not PurePath(value).is_absolute():
        raise ValueError("must be an age recipient (age1...), an SSH public key or the absolute path "
                         f"of a recipients file such as /etc/lifeboat/recipients.txt, got {shown(value)}")
    return value
