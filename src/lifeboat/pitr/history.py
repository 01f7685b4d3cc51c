"""Every version of matching keys over a cluster's retained timeline (``lifeboat k8s history``).

Per capture chain, oldest first: the version the chain's base backup holds, then every
captured put or delete of the key, with its revision and the time capture saw it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import Window
from lifeboat.errors import IntegrityError
from lifeboat.etcdapi.model import EventType, KeyValue
from lifeboat.pitr.point import cluster_timeline
from lifeboat.snapshot import iter_latest
from lifeboat.snapshot.spool import spool_dir
from lifeboat.verify.backup import verify_backup

KeyMatch = Callable[[bytes, bytes], bool]  # (etcd key, stored value) -> is it the object?


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a key: ``kv`` None means it was deleted at ``revision``."""

    key: bytes
    revision: int
    seen: datetime | None  # None: as held by a base backup (taken at ``source``'s time)
    source: str
    kv: KeyValue | None


def object_history(repo: BackupRepository, cluster: str, matches: KeyMatch,
                   identities: Sequence[Identity] | None, tmp_dir: Path | None = None) -> list[ObjectVersion]:
    """Every version of the keys ``matches`` picks, oldest first, across every capture chain."""
    timeline = cluster_timeline(repo, cluster)
    versions: list[ObjectVersion] = []
    for window in timeline.windows:
        if window.chain is not None:
            versions.extend(_window_versions(repo, cluster, window, matches, identities, tmp_dir))
    return versions


def _window_versions(repo: BackupRepository, cluster: str, window: Window, matches: KeyMatch,
                     identities: Sequence[Identity] | None, tmp_dir: Path | None) -> Iterator[ObjectVersion]:
    assert window.chain is not None
    keys: set[bytes] = set()
    with spool_dir("history", tmp_dir) as tmp:
        base = Path(tmp) / "base.db"
        report = verify_backup(repo, window.base, identities, tmp_dir=Path(tmp), keep_snapshot=base)
        failure = report.first_failure()
        if failure is not None:
            raise IntegrityError(f"base backup {window.base.id} failed verification ({failure.name}: "
                                 f"{failure.detail})")
        for kv in iter_latest(base, b"/"):
            if matches(kv.key, kv.value):
                keys.add(kv.key)
                yield ObjectVersion(kv.key, kv.mod_revision, None, f"base backup {window.base.id}", kv)
    store = repo.chain_store
    chain = window.chain.info.chain
    covered = window.first_revision
    for ref in window.segments:
        segment = store.read_segment(cluster, chain, ref, identities)
        for rev in segment.revisions:
            if rev.revision <= covered:
                continue  # an overlapping copy of revisions already read
            for event in rev.events:
                key = event.kv.key
                if key in keys or (event.type is EventType.PUT and matches(key, event.kv.value)):
                    keys.add(key)
                    value = event.kv if event.type is EventType.PUT else None
                    yield ObjectVersion(key, rev.revision, rev.seen, f"chain {chain}", value)
        covered = max(covered, segment.last_revision)
