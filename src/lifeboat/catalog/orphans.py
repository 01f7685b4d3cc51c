"""Orphans: objects under a backup's prefix with no manifest beside them.

They are what an interrupted backup leaves behind, or the pin (or a prune's deletion claim) of
a delete interrupted after its manifest, the one record it removes after the manifest. A backup in progress looks
exactly like an orphan, so only orphans older than a grace period may be removed. Their age
is that of their newest object, by the time the store stamped on it: a backup's objects become
visible one by one as each upload completes, so however long ago the backup started (its id),
an object written a moment ago belongs to a backup that may commit any moment now.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from lifeboat.catalog.ids import is_backup_id
from lifeboat.catalog.repository import BackupRepository
from lifeboat.store.base import ObjectInfo


@dataclass(frozen=True)
class Orphan:
    """The uncommitted objects of one backup id."""

    cluster: str
    backup_id: str
    started_at: datetime
    keys: tuple[str, ...]
    size: int
    last_written: datetime  # the newest object's modification time (never before started_at)
    # Only a pin or a prune's deletion claim, which a delete interrupted after the manifest leaves:
    # no backup, neither a running one nor one its data lies for.
    pin_only: bool = False


def find_orphans(repo: BackupRepository, cluster: str | None = None) -> list[Orphan]:
    """Every backup prefix that holds objects but no manifest, oldest first.

    Prefixes whose name is not a lifeboat backup id are not ours and are left out.
    """
    groups: dict[tuple[str, str], list[ObjectInfo]] = defaultdict(list)
    committed: set[tuple[str, str]] = set()
    holding_data: set[tuple[str, str]] = set()
    for name, obj in repo.backup_objects(cluster):
        if not is_backup_id(name.backup_id):
            continue
        ident = (name.cluster, name.backup_id)
        if name.is_manifest:
            committed.add(ident)
        elif not name.is_pin:
            holding_data.add(ident)
        groups[ident].append(obj)
    return [
        _orphan(c, b, objs, pin_only=(c, b) not in holding_data)
        for (c, b), objs in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0]))
        if (c, b) not in committed
    ]


def _orphan(cluster: str, backup_id: str, objects: list[ObjectInfo], pin_only: bool) -> Orphan:
    started = _started(backup_id)
    written = [o.modified for o in objects if o.modified is not None]
    return Orphan(cluster, backup_id, started, tuple(o.key for o in objects), sum(o.size for o in objects),
                  max([started, *written]), pin_only)


def _started(backup_id: str) -> datetime:
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
