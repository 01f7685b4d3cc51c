"""Synthetic full backups: a base backup plus captured segments, written as a new full backup.

Nothing asks etcd: the point's snapshot is built offline (:mod:`lifeboat.pitr`) and stored like
any backup, with labels naming the chain and the backup it came from. A restore or drill uses it
like any other backup, and a restore to a later point in the same chain starts from it, so fewer
events are replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from lifeboat.backup.pipeline import BackupOptions, commit_snapshot_file
from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.segments import seen_text
from lifeboat.catalog.timeline import (
    SYNTHETIC_CHAIN, SYNTHETIC_FROM, SYNTHETIC_REVISION, SYNTHETIC_SEEN, RestorePoint,
)
from lifeboat.errors import UsageError
from lifeboat.pitr import build_point_snapshot
from lifeboat.snapshot.spool import spool_dir


def synthesize(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
               options: BackupOptions, *,
               now: Callable[[], datetime] | None = None) -> Manifest:
    """Write and commit a full backup of the cluster at ``point``; returns its manifest."""
    chain = point.window.chain
    if chain is None or not point.replays:
        raise UsageError(f"revision {point.revision} is already a backup ({point.base.id}); "
                         "choose a later captured revision")
    _require_encryption(point, options)
    with spool_dir("synthetic", options.tmp_dir) as tmp:
        built = build_point_snapshot(repo, point, identities, Path(tmp) / "snapshot.db")
        labels = {SYNTHETIC_CHAIN: chain.info.chain, SYNTHETIC_FROM: point.base.id,
                  SYNTHETIC_REVISION: str(point.revision),
                  # The point as built: listed again if its segments were packed meanwhile.
                  SYNTHETIC_SEEN: seen_text(_seen(repo, built.point, identities))}
        return commit_snapshot_file(repo, options, built.path, point.base.source, labels, now=now)


def _seen(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None) -> datetime:
    """When capture saw the point's revision: once the chain's own base is deleted, the synthetic
    backup's window starts at this time (see :func:`lifeboat.catalog.timeline.seen_time`)."""
    chain = point.window.chain
    assert chain is not None and point.segments
    last = repo.chain_store.read_segment(chain.info.cluster, chain.info.chain, point.segments[-1], identities)
    return max(r.seen for r in last.revisions if r.revision <= point.revision)


def _require_encryption(point: RestorePoint, options: BackupOptions) -> None:
    """Refuse to write the state of an encrypted base or segments unencrypted: it holds every
    Secret of the cluster, and once retention folds the chain it is the only copy left."""
    if options.recipients:
        return
    encrypted = [f"base backup {point.base.id}"] if point.base.encryption else []
    encrypted += [f"{n} capture segment(s)" for n in [sum(ref.encrypted for ref in point.segments)] if n]
    if not encrypted:
        return
    advice = (f" (the base's recipients: {' '.join(f'--encrypt-to {r!r}' for r in point.base.recipients)})"
              if point.base.recipients else "")
    raise UsageError(f"{' and '.join(encrypted)} of the point are encrypted, and no recipient is given: the "
                     "synthetic backup would hold the cluster's state, Secrets included, unencrypted; give "
                     f"--encrypt-to (or the config file's encryption.recipients){advice}")
