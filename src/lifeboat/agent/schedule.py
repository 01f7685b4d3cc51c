"""Cron schedules as pure functions of an expression and a time.

A tick is named by its scheduled wall time (UTC). The agent records the last tick it
ran (in etcd, shared by every agent of a cluster) and asks :func:`due_tick` which tick, if
any, to run now. That makes clock jumps harmless:

* a jump forward over several ticks runs the newest missed tick once, not once per tick;
* a jump backward finds only ticks at or before the recorded one, so nothing runs twice;
* a recorded tick further in the future than :data:`FUTURE_TOLERANCE` came from a clock
  that was wrong and has been corrected; it is ignored (the newest tick runs), or the
  schedule would stall until the wall clock caught up with it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from croniter import CroniterError, croniter

from lifeboat.config import cron_fields
from lifeboat.config import next_run as config_next_run
from lifeboat.errors import UsageError

FUTURE_TOLERANCE = timedelta(hours=1)


def check_cron(cron: str, where: str = "schedule") -> str:
    """Return ``cron`` if ``config validate`` accepts it (the same rule); else a UsageError naming ``where``."""
    try:
        cron_fields(cron)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}, e.g. '0 */6 * * *' or '@daily'") from None
    return cron


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("schedule times must be timezone-aware")
    return moment.astimezone(timezone.utc)


def next_run(cron: str, now: datetime) -> datetime:
    """The first tick strictly after ``now`` (UTC)."""
    now = _utc(now)
    try:
        return config_next_run(cron, now)
    except (CroniterError, ValueError) as exc:
        raise UsageError(f"cron expression {cron!r}: {exc}") from None


def latest_tick(cron: str, now: datetime) -> datetime:
    """The newest tick at or before ``now`` (UTC)."""
    now = _utc(now)
    try:
        tick: datetime = croniter(cron_fields(cron), now).get_prev(datetime)
    except (CroniterError, ValueError) as exc:
        raise UsageError(f"cron expression {cron!r}: {exc}") from None
    # croniter's get_prev is strictly before ``now``; a tick exactly at ``now`` counts.
    following = next_run(cron, tick)
    return following if following <= now else tick


def due_tick(cron: str, now: datetime, last_done: datetime | None) -> datetime | None:
    """The tick to run at ``now``, or None when the newest tick has already run.

    ``last_done`` is the tick recorded as run. Without a usable record (a new cluster,
    or a record from a clock that was wrong) the newest tick is due at once, so a cluster
    gets its first backup when the agent starts rather than a whole period later.
    """
    tick = latest_tick(cron, now)
    if last_done is None or _utc(last_done) > _utc(now) + FUTURE_TOLERANCE:
        return tick
    return tick if tick > _utc(last_done) else None
