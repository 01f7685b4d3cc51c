"""Every version of matching keys over a cluster's retained timeline (``lifeboat k8s history``).

Per capture chain, oldest first: the version the chain's base backup holds, then every
captured put or delete of the key, with its revision and the time capture saw it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.chains import DamagedSegment, SegmentGone
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.segments import Segment
from lifeboat.catalog.timeline import RestorePoint, TimelineGap, Window, cluster_timeline
from lifeboat.errors import IntegrityError
from lifeboat.etcdapi.model import EventType, KeyValue
from lifeboat.pitr.point import RELISTINGS, relisted, spared
from lifeboat.snapshot import iter_latest
from lifeboat.snapshot.spool import spool_dir
from lifeboat.verify.backup import verify_backup

_log = logging.getLogger(__name__)

KeyMatch = Callable[[bytes, bytes], bool]  # (etcd key, stored value) -> is it the object?


@dataclass(frozen=True)
class ObjectVersion:
    """One version of a key: ``kv`` None means it was deleted at ``revision``."""

    key: bytes
    revision: int
    seen: datetime | None  # None: as held by a base backup (taken at ``source``'s time)
    source: str
    kv: KeyValue | None


@dataclass(frozen=True)
class ObjectHistory:
    """The versions found, and the timeline's gaps: revisions of which nothing is known (not
    captured, or segments missing from the repository), where the object may have changed
    unseen."""

    versions: list[ObjectVersion]
    gaps: tuple[TimelineGap, ...]


def object_history(repo: BackupRepository, cluster: str, matches: KeyMatch,
                   identities: Sequence[Identity] | None, tmp_dir: Path | None = None) -> ObjectHistory:
    """Every version of the keys ``matches`` picks, oldest first, across every capture chain."""
    timeline = cluster_timeline(repo, cluster)
    versions: list[ObjectVersion] = []
    for window in timeline.windows:
        if window.chain is not None:
            versions.extend(_window_versions(repo, cluster, window, matches, identities, tmp_dir))
    return ObjectHistory(versions, timeline.gaps)


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
    chain = window.chain.info.chain
    covered = window.first_revision
    for segment in _segments(repo, cluster, window, identities):
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


def _segments(repo: BackupRepository, cluster: str, window: Window,
              identities: Sequence[Identity] | None) -> Iterator[Segment]:
    """The window's segments, read in order. One packed and deleted since the window was listed
    (the base's download and the reads before it can outlast ``capture.pack-delete-after``) is
    read from what a new listing of the chain names in its place, as a point restore does."""
    assert window.chain is not None
    chain = window.chain.info.chain
    # The whole window as a point, so that a new listing is read as a point restore reads it.
    point = RestorePoint(window.last_revision, window, window.segments)
    covered, relistings, damaged = window.first_revision, 0, frozenset[str]()
    while True:
        try:
            for ref in point.segments:
                if ref.last_revision > covered:
                    segment = repo.chain_store.read_segment(cluster, chain, ref, identities)
                    yield segment
                    covered = max(covered, segment.last_revision)
            return
        except SegmentGone:
            fresh = relisted(repo, point, damaged) if relistings < RELISTINGS else None
            if fresh is None:
                raise
            _log.warning("segments of chain %s were packed and deleted since it was listed; reading the "
                         "chain as listed now from revision %d", chain, covered + 1)
            relistings += 1
        except DamagedSegment as exc:
            if (spare := spared(repo, point, damaged, exc)) is None:
                raise
            fresh, damaged = spare
            _log.warning("%s; reading the other segments that hold its revisions", exc)
        point = fresh
