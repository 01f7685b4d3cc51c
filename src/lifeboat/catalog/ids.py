"""Backup ids: names that sort by the time the backup started."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

from lifeboat.config.rules import CLUSTER_NAME
from lifeboat.errors import UsageError

# 20261122T030405Z-1a2b3c: UTC start time to the second, then 24 random bits so two agents
# (or two runs in one second) never collide. Lexical order is time order.
_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


def new_backup_id(started_at: datetime) -> str:
    """Make an id for a backup started at ``started_at`` (an aware datetime)."""
    return f"{id_floor(started_at)}-{secrets.token_hex(3)}"


def id_floor(moment: datetime) -> str:
    """A string that the ids of backups started in ``moment``'s second or later sort after,
    and the ids of backups started in an earlier second sort before."""
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def id_second(backup_id: str) -> str:
    """The second a backup id names (its :func:`id_floor`), without the random suffix."""
    return backup_id.partition("-")[0]


def is_backup_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


def check_backup_id(text: str) -> str:
    """Return ``text`` if it is a well-formed backup id, else raise UsageError."""
    if not is_backup_id(text):
        raise UsageError(
            f"{text!r} is not a backup id (expected e.g. 20261122T030405Z-1a2b3c, or 'latest')"
        )
    return text




def check_cluster_name(name: str) -> str:
    """Cluster names become object-key segments: lowercase DNS-label-like only."""
    if not CLUSTER_NAME.fullmatch(name):
        raise UsageError(
            f"cluster name {name!r} is invalid: use 1-63 lowercase letters, digits, '.', '_' or '-'"
        )
    return name
