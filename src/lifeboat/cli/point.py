"""``--to-revision`` / ``--to-time``: the flags that turn a backup source into a point in time."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import RestorePoint
from lifeboat.errors import UsageError

if TYPE_CHECKING:
    from lifeboat.pitr import PointTarget


def add_point_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "point in time (needs 'lifeboat capture'; the newest base backup at or before the point is "
        "used and the captured events after it are replayed offline)")
    g.add_argument("--to-revision", type=int, metavar="R",
                   help="the cluster exactly as it was at etcd revision R")
    g.add_argument("--to-time", metavar="TIME",
                   help="the cluster as capture last saw it at or before TIME (RFC 3339, e.g. "
                        "2026-12-01T03:04:05Z or with an offset)")


def point_target(args: argparse.Namespace) -> PointTarget | None:
    revision = getattr(args, "to_revision", None)
    text = getattr(args, "to_time", None)
    if revision is None and text is None:
        return None
    # Here, not at the top: commands given no point start without the replay machinery.
    from lifeboat.pitr import PointTarget, parse_time

    return PointTarget(revision=revision, moment=parse_time(text) if text is not None else None)


def resolve_point(args: argparse.Namespace, repo: BackupRepository, cluster: str | None,
                  identities: Sequence[Identity] | None, backup_id: str | None) -> RestorePoint | None:
    """The point the flags ask for, or None without them; ``backup_id`` must agree with it."""
    target = point_target(args)
    if target is None:
        return None
    from lifeboat.pitr import find_point

    point = find_point(repo, cluster or only_cluster(repo), target, identities)
    if backup_id not in (None, "latest", point.base.id):
        raise UsageError(f"{target.describe()} is restored from base backup {point.base.id}, not {backup_id}; "
                         "leave out the backup id (or give that one)")
    return point


def only_cluster(repo: BackupRepository) -> str:
    """The repository's one cluster, for commands given no --cluster."""
    clusters = sorted({m.cluster for m in repo.manifests()})
    if len(clusters) != 1:
        raise UsageError(f"the repository holds {'no' if not clusters else 'several'} clusters: pass --cluster")
    return clusters[0]
