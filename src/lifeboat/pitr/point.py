"""A snapshot of a cluster at any captured revision or time: base backup + replayed segments."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.chains import DamagedSegment, SegmentGone, SegmentRef
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.segments import Segment
from lifeboat.catalog.timeline import (
    RestorePoint, Timeline, Window, cluster_timeline, point_at_revision, point_at_time,
)
from lifeboat.errors import IntegrityError, UsageError
from lifeboat.pitr.replay import compaction_marks, lease_rows, stored_rows
from lifeboat.pitr.survey import ChainSurvey
from lifeboat.pitr.survey_run import Progress
from lifeboat.snapshot.mvcc import read_lease_ids, read_meta
from lifeboat.snapshot.writer import BucketChanges, Replayed, commit_in_place, write_db
from lifeboat.verify.backup import require_verify_room, verify_backup

_log = logging.getLogger(__name__)

# A segment gone since the chain was listed is looked for in a new listing this many times at
# most: ``lifeboat pack`` deletes what a pack holds only after the pack is
# ``capture.pack-delete-after`` old, so a second such race within one restore means packs
# and deletions faster than a listing and a survey, not a race to wait out.
RELISTINGS = 2


@dataclass(frozen=True)
class PointTarget:
    """What the user asked for: ``--to-revision R`` or ``--to-time T`` (one of them)."""

    revision: int | None = None
    moment: datetime | None = None

    def __post_init__(self) -> None:
        if (self.revision is None) == (self.moment is None):
            raise UsageError("give either --to-revision or --to-time, not both")
        if self.revision is not None and self.revision < 1:
            raise UsageError(f"--to-revision must be a revision of 1 or more, got {self.revision}")

    def describe(self) -> str:
        if self.revision is not None:
            return f"revision {self.revision}"
        assert self.moment is not None
        return self.moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """``--to-time``: RFC 3339 with ``Z`` or an offset (a time without one is ambiguous)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--to-time {text!r} is not an RFC 3339 time such as 2026-12-01T03:04:05Z") from None
    if moment.tzinfo is None:
        raise UsageError(f"--to-time {text!r} has no offset; add Z (UTC) or e.g. +01:00")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+14:00: before the first UTC time there is
        raise UsageError(f"--to-time {text!r} is out of range") from None


def find_point(repo: BackupRepository, cluster: str, target: PointTarget,
               identities: Sequence[Identity] | None, base_id: str | None = None) -> RestorePoint:
    """The base backup and segments that restore ``cluster`` to ``target``; UsageError if none can.

    The newest base at or before the point, or the backup ``base_id``. A time after the
    repository clock's now is refused.
    """
    timeline = cluster_timeline(repo, cluster)
    if target.revision is not None:
        return point_at_revision(timeline, target.revision, base_id)
    assert target.moment is not None
    moment, chains = target.moment, repo.chain_store

    def read(window: Window, ref: SegmentRef) -> Segment:
        assert window.chain is not None
        return chains.read_segment(cluster, window.chain.info.chain, ref, identities)

    damaged: frozenset[str] = frozenset()
    while True:
        try:
            return point_at_time(timeline, moment, repo.clock.now(), read, base_id)
        except DamagedSegment as exc:
            found = damaged_one(timeline, exc)
            if found is None:
                raise
            damaged |= {found}
            timeline = cluster_timeline(repo, cluster, damaged)
            _log.warning("%s; reading the other segments that hold its revisions", exc)


@dataclass(frozen=True)
class PointSnapshot:
    """A raw snapshot file (with etcd's trailer, or the replay's record) holding the cluster at ``point.revision``."""

    path: Path
    point: RestorePoint
    events: int
    segments: int
    leases_added: int
    seconds: float
    # Of ``seconds``: waiting for the segments' survey (started beside the base's fetch) to end.
    survey_wait: float = 0.0


def build_point_snapshot(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
                         dest: Path, *, base_snapshot: Path | None = None,
                         progress: Progress = lambda stage, done: None,
                         survey: ChainSurvey | None = None,
                         record: Callable[[Replayed], None] | None = None,
                         rows_room: Callable[[int], None] | None = None) -> PointSnapshot:
    """Write ``dest``: the base backup (fetched and verified, or ``base_snapshot`` if already
    fetched) with every captured event up to the point applied. Nothing is applied unless the
    whole chain up to the point downloads and checks. ``seconds`` is on the repository's clock.
    Fetching the base itself, it first refuses (NoRoom) unless the base and the segments it
    stages fit; the rows are checked before they are written (``rows_room``, and the writer).

    The segments are downloaded and surveyed while the base is fetched (``survey``: one the
    caller started earlier; this call closes it). The events are committed into the fetched
    base itself (no copy of it) when this call fetches it, or when ``base_snapshot`` is
    ``dest``; into a new file otherwise. An interruption leaves ``dest`` at the base's revision
    or complete (:func:`~lifeboat.snapshot.writer.commit_in_place`); at the base's revision it
    no longer has a trailer, so it is neither mistaken for the base nor used before it is
    written again. ``record`` (only with ``base_snapshot`` ``dest``): the events are committed
    without a new trailer, ``record`` keeps what proves the bytes instead (see
    :func:`~lifeboat.snapshot.writer.commit_in_place`); for a caller that checks them itself next.

    ``rows_room`` is told, once the segments are surveyed and before anything is written, how
    many bytes the replay's rows add to the snapshot (the pages they fill, counted from the
    segments' indexes); it raises (:class:`~lifeboat.errors.NoRoom`) when what the caller does
    with the grown snapshot next would not fit. The writer checks the rows' own room in any case.
    """
    clock = repo.clock
    started = clock.monotonic()
    base = base_snapshot or dest
    if not point.replays:
        if survey is not None:
            survey.close()
        if base_snapshot is None:
            _fetch_base(repo, point, identities, base)
        try:
            _check_base_revision(point, base)
        except IntegrityError:
            if base_snapshot is None:
                dest.unlink(missing_ok=True)  # this call's own download
            raise
        if base != dest:
            os.replace(base, dest)
        return PointSnapshot(dest, point, 0, 0, 0, clock.monotonic() - started)
    work = staging_dir(dest)
    if base_snapshot is None:
        # Before the survey stages anything: the base it fetches and the segments beside it.
        require_verify_room(point.base, dest.parent, dest, extra=point.segment_bytes,
                            extra_what="the capture segments it replays")
    chain = survey or ChainSurvey(repo, point, identities, work, progress)
    try:
        try:
            if base_snapshot is None:
                _fetch_base(repo, point, identities, base)
            _check_base_revision(point, base)
            surveyed = clock.monotonic()
            listings, damaged = 0, frozenset[str]()
            while True:
                try:
                    facts, runs = chain.result()
                    break
                except SegmentGone:
                    fresh = relisted(repo, point, damaged) if listings < RELISTINGS else None
                    if fresh is None:
                        raise
                    listings += 1
                    _log.warning("segments of chain %s were packed and deleted since it was listed; "
                                 "surveying the chain as listed now (%d segment(s) up to revision %d)",
                                 _chain_id(point), len(fresh.segments), point.revision)
                except DamagedSegment as exc:
                    # Each damaged segment is left out once: as many tries as the point has segments, at most.
                    if (spare := spared(repo, point, damaged, exc)) is None:
                        raise
                    fresh, damaged = spare
                    _log.warning("%s; surveying instead the other segments that hold its revisions "
                                 "(%d segment(s) up to revision %d)", exc, len(fresh.segments), point.revision)
                chain.close()
                point = fresh
                chain = ChainSurvey(repo, point, identities, work, progress)
            survey_wait = clock.monotonic() - surveyed
            if rows_room is not None:
                rows_room(facts.written_bytes)
            leases = lease_rows(facts, read_lease_ids(base))
            changes = [BucketChanges(b"key", appends=stored_rows(runs)),
                       BucketChanges(b"meta", puts=compaction_marks(point.revision))]
            if leases:
                changes.append(BucketChanges(b"lease", puts=leases))
            if base == dest:
                commit_in_place(dest, changes, append_bytes_hint=facts.written_bytes, record=record)
            else:
                # The base was verified as it was fetched (by the caller that passed it).
                write_db(base, dest, changes, trailer=True, append_bytes_hint=facts.written_bytes, source_checked=True)
        except BaseException:
            if base_snapshot is None:
                dest.unlink(missing_ok=True)  # this call's own download, never finished
            raise
    finally:
        chain.close()
    return PointSnapshot(dest, point, facts.events, len(point.segments), len(leases), clock.monotonic() - started,
                         survey_wait)


def staging_dir(dest: Path) -> Path:
    """Where the segments replayed into ``dest`` are staged while it is built."""
    return dest.with_name(dest.name + ".segments")


def relisted(repo: BackupRepository, point: RestorePoint, without: frozenset[str] = frozenset()) -> RestorePoint | None:
    """``point`` (same base, same revision) with its segments as the repository lists them now,
    leaving out those named in ``without`` (found damaged), or None when that is not a
    different set of segments reaching the point: a segment missing now is missing, not packed,
    and one damaged is damaged when no other segments hold its revisions."""
    cluster = point.base.cluster
    try:
        fresh = point_at_revision(cluster_timeline(repo, cluster, without), point.revision, point.base.id)
    except UsageError:  # the chain has a hole there now, or the base went
        return None
    if fresh.base.id != point.base.id or fresh.segments == point.segments:
        return None
    return fresh


def spared(repo: BackupRepository, point: RestorePoint, damaged: frozenset[str],
           damage: DamagedSegment) -> tuple[RestorePoint, frozenset[str]] | None:
    """``point`` read without the segment ``damage`` is about (and those found ``damaged``
    before), with the names left out; None when no other segments hold its revisions."""
    found = damaged_one(point, damage)
    if found is None or (fresh := relisted(repo, point, damaged | {found})) is None:
        return None
    return fresh, damaged | {found}


def damaged_one(point: RestorePoint | Timeline, damage: DamagedSegment) -> str | None:
    """The name of the segment of ``point`` (or of the windows of a timeline) that ``damage`` is about."""
    windows = point.windows if isinstance(point, Timeline) else (point.window,)
    for window in windows:
        for ref in window.segments:
            if (ref.first_revision, ref.last_revision) == damage.revisions:
                return ref.name
    return None


def _chain_id(point: RestorePoint) -> str:
    return point.window.chain.info.chain if point.window.chain is not None else "-"


def _check_base_revision(point: RestorePoint, base: Path) -> None:
    """IntegrityError unless the fetched base holds the state at least up to the revision the
    events are replayed after: one below it (a chain record naming a later revision than its
    base's, hand-edited or damaged but still JSON) would have the events in between skipped."""
    assert point.base.snapshot is not None
    held = read_meta(base).state_revision(point.base.snapshot.revision)
    if held < point.base_revision:
        chain = _chain_id(point)
        raise IntegrityError(f"base backup {point.base.id} holds the state at revision {held}, but chain {chain} "
                             f"says its events start after revision {point.base_revision}: the chain's record "
                             "(chain.json) is damaged; nothing was replayed")


def _fetch_base(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
                path: Path) -> None:
    report = verify_backup(repo, point.base, identities, tmp_dir=path.parent, keep_snapshot=path)
    failure = report.first_failure()
    if failure is not None or not report.ok:
        path.unlink(missing_ok=True)
        what = f"{failure.name}: {failure.detail}" if failure else "no checks ran"
        raise IntegrityError(f"base backup {point.base.id} failed verification ({what})")
