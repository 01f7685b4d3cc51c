"""Orphans: objects under a backup's prefix with no manifest beside them.

They are what an interrupted backup leaves behind (a delete cannot leave any: it removes
the manifest last, so an interrupted delete still has its manifest). A backup in progress looks
exactly like an orphan, so only orphans older than a grace period may be removed; their
age comes from the backup id, which starts with the backup's UTC start time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from lifeboat.catalog.ids import is_backup_id
from lifeboat.catalog.repository import BackupRepository


@dataclass(frozen=True)
class Orphan:
    """The uncommitted objects of one backup id."""

    cluster: str
    backup_id: str
    started_at: datetime
    keys: tuple[str, ...]
    size: int


def find_orphans(repo: BackupRepository, cluster: str | None = None) -> list[Orphan]:
    """Every backup prefix that holds objects but no manifest, oldest first.

    Prefixes whose name is not a lifeboat backup id are not ours and are left out.
    """
    groups: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    committed: set[tuple[str, str]] = set()
    for name, obj in repo.backup_objects(cluster):
        if not is_backup_id(name.backup_id):
            continue
        ident = (name.cluster, name.backup_id)
        if name.is_manifest:
            committed.add(ident)
        groups[ident].append((obj.key, obj.size))
    return [
        Orphan(c, b, _started(b), tuple(k for k, _ in objs), sum(s for _, s in objs))
        for (c, b), objs in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0]))
        if (c, b) not in committed
    ]


def _started(backup_id: str) -> datetime:
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
