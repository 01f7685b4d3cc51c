"""``--to-revision`` / ``--to-time`` (flags of :mod:`lifeboat.cli.flags`) turned into a point in time."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.ids import check_backup_id
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import RestorePoint
from lifeboat.errors import UsageError

if TYPE_CHECKING:
    from lifeboat.pitr import PointTarget


def point_target(args: argparse.Namespace) -> PointTarget | None:
    revision = getattr(args, "to_revision", None)
    text = getattr(args, "to_time", None)
    if revision is None and text is None:
        return None
    # Here, not at the top: commands given no point start without the replay machinery.
    from lifeboat.pitr import PointTarget, parse_time

    return PointTarget(revision=revision, moment=parse_time(text) if text is not None else None)


def resolve_point(args: argparse.Namespace, repo: BackupRepository, cluster: str | None,
                  identities: Sequence[Identity] | None, backup_id: str | None,
                  *, resumed_base: str | None = None) -> RestorePoint | None:
    """The point the flags ask for, or None without them.

    ``backup_id`` (other than ``latest``) names the base to replay from instead of the newest
    one at or before the point: an older one whose chain reaches the point, when the newest
    (a synthetic backup, say) is damaged. ``resumed_base``: the base a resumed restore
    journaled (fetched and replayed already); it stays the base even when a newer one at or
    before the point appeared since, and ``backup_id`` must agree with it.
    """
    target = point_target(args)
    if target is None:
        return None
    from lifeboat.pitr import find_point

    named = check_backup_id(backup_id) if backup_id not in (None, "latest") else None
    point = find_point(repo, cluster or only_cluster(repo), target, identities, resumed_base or named)
    if named is not None and named != point.base.id:
        raise UsageError(f"{target.describe()} is restored from base backup {point.base.id}, not {backup_id}; "
                         "leave out the backup id (or give that one)")
    return point


def only_cluster(repo: BackupRepository) -> str:
    """The repository's one cluster, for commands given no --cluster."""
    clusters = sorted({m.cluster for m in repo.manifests()})
    if len(clusters) != 1:
        raise UsageError(f"the repository holds {'no' if not clusters else 'several'} clusters: pass --cluster")
    return clusters[0]
