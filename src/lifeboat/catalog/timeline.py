"""The timeline of a cluster: which revisions and times can be restored, and every gap.

Pure functions of the backups and chains a listing found (and, to map a time inside a
segment to a revision, of that one segment). A recoverable window is a base backup plus the
unbroken run of segments after it; a backup without a chain is a window of one revision.
Anything between windows is a gap, with the reason the chain recorded, or "not captured".

A chain's window starts at its own base backup. Its later bases are the full backups written
from the chain (synthetic) and those taken of the cluster while the chain captured it (a
scheduled one, say: :func:`later_bases`): a point after one replays only the events
after it, not the whole chain from its base. Once retention has deleted the chain's base (and
the segments before a later base), the window starts at the oldest remaining later base,
which folded everything before it.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from lifeboat.catalog.chains import ChainListing, SegmentRef, reach_first, shared_revisions
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.repository import BackupRepository, started_time
from lifeboat.catalog.segments import Segment
from lifeboat.errors import UsageError

_log = logging.getLogger(__name__)


def manifest_time(manifest: Manifest) -> datetime:
    """When the backup finished. One written to the second (by lifeboat before December 2026)
    finished within the second after: it is taken as the end of that second, so that no time
    before the backup finished is given its state (writes made after the time asked)."""
    finished = datetime.fromisoformat(manifest.finished_at.replace("Z", "+00:00")).astimezone(timezone.utc)
    return finished if "." in manifest.finished_at else finished + timedelta(seconds=1)


@dataclass(frozen=True)
class Window:
    """Revisions ``first_revision..last_revision`` (times ``first_time..last_time``) restorable."""

    base: Manifest
    first_revision: int
    last_revision: int
    first_time: datetime
    last_time: datetime
    chain: ChainListing | None = None
    segments: tuple[SegmentRef, ...] = ()  # the unbroken run used, in order
    capturing: bool = False  # the chain has no end recorded: capture may still extend it
    later: tuple[Base, ...] = ()  # later bases: written from the chain or taken while it captured, by revision

    def covers(self, revision: int) -> bool:
        return self.first_revision <= revision <= self.last_revision

    @property
    def synthetic(self) -> tuple[Manifest, ...]:
        """The later bases written from the chain (``synthesize``)."""
        return tuple(b.manifest for b in self.later if SYNTHETIC_CHAIN in b.manifest.labels)

    @property
    def passing(self) -> tuple[Manifest, ...]:
        """The later bases taken while the chain captured."""
        return tuple(b.manifest for b in self.later if SYNTHETIC_CHAIN not in b.manifest.labels)

    def bases(self) -> tuple[Base, ...]:
        """Every full backup a restore inside this window can start from, oldest first: the
        window's base, and the later ones written from its chain or taken while it captured.
        Retention keeps a chain's segments for them and folds it into its oldest kept one."""
        return (Base(self.base, self.first_revision, self.first_time), *self.later)


@dataclass(frozen=True)
class Base:
    """A full backup as a starting point: the state at ``revision``, as capture saw it at ``time``."""

    manifest: Manifest
    revision: int
    time: datetime


@dataclass(frozen=True)
class TimelineGap:
    """Revisions after ``after_revision`` and before ``before_revision`` cannot be restored."""

    after_revision: int
    before_revision: int | None  # None: nothing restorable after the gap (yet)
    after_time: datetime
    before_time: datetime | None
    reason: str
    # Segments of a chain are missing from the repository (damage), not revisions that capture
    # recorded it could not read or that no chain covers.
    missing: bool = False


@dataclass(frozen=True)
class Unplaced:
    """A backup taken of the cluster inside a chain's revisions whose times do not fit capture's:
    not a base of the chain (and retention does not fold the chain into it)."""

    backup: str
    chain: str
    reason: str

    def text(self) -> str:
        return (f"backup {self.backup} is not a base of capture chain {self.chain}, though taken inside its "
                f"revisions: {self.reason} (a clock off capture's, or the cluster restored since?); restores to "
                "later points replay from an older base, and retention does not fold the chain into it")


@dataclass(frozen=True)
class Timeline:
    cluster: str
    windows: tuple[Window, ...]  # by first revision
    gaps: tuple[TimelineGap, ...]
    unplaced: tuple[Unplaced, ...] = ()

    def window_end(self, manifest: Manifest) -> Window | None:
        """The window that starts at ``manifest`` (its chain, or itself alone)."""
        own = [w for w in self.windows if w.base.id == manifest.id]
        return own[0] if own else None


SYNTHETIC_CHAIN = "lifeboat.synthetic-chain"  # label of a full backup written from a chain
SYNTHETIC_FROM = "lifeboat.synthetic-from"
SYNTHETIC_REVISION = "lifeboat.synthetic-revision"
SYNTHETIC_SEEN = "lifeboat.synthetic-seen"  # when capture saw the revision it holds (RFC 3339)
# The revision a backup's state is at, when above its snapshot's last row (a compaction removed
# the tombstones after it: SnapshotMeta.state_revision). Written by backups since December 2026.
STATE_REVISION = "lifeboat.state-revision"


def start_revision(m: Manifest) -> int:
    """The revision ``m``'s state is at, as far as its manifest tells: a replay from it applies
    the events after this revision."""
    text = m.labels.get(STATE_REVISION, "")
    return int(text) if text.isascii() and text.isdigit() and int(text) >= m.snapshot.revision else m.snapshot.revision


def seen_time(m: Manifest, holding: Sequence[SegmentRef]) -> datetime:
    """When capture saw the revision a later base of a chain holds, or a time no earlier than that.

    A synthetic backup's label is exact. Without it (a backup taken while the chain captured,
    or synthetic ones written before the label existed), the last time seen of the segments
    ``holding`` the revision, else the time the backup finished: both are at or after the true
    time, so a window never claims a moment it cannot restore.
    """
    text = m.labels.get(SYNTHETIC_SEEN)
    if text is not None:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
        except ValueError:
            pass
    return min(s.last_seen for s in holding) if holding else manifest_time(m)


class SegmentsAt:
    """The segments of a chain holding a revision, found by bisection: a pack overlaps the
    segments it holds, so those starting up to the longest segment's reach before are looked at."""

    def __init__(self, segments: Sequence[SegmentRef]) -> None:
        self._by_first = sorted(segments, key=lambda s: s.first_revision)
        self._firsts = [s.first_revision for s in self._by_first]
        self._reach = max((s.last_revision - s.first_revision for s in segments), default=0)
        self.last_revision = max((s.last_revision for s in segments), default=0)

    def holding(self, revision: int) -> list[SegmentRef]:
        low = bisect_left(self._firsts, revision - self._reach)
        return [s for s in self._by_first[low:bisect_right(self._firsts, revision)] if s.last_revision >= revision]

    def base(self, m: Manifest) -> Base:
        """``m`` as a later base of the chain."""
        return Base(m, start_revision(m), seen_time(m, self.holding(start_revision(m))))


def build_timeline(cluster: str, manifests: Sequence[Manifest], chains: Sequence[ChainListing]) -> Timeline:
    """Windows and gaps of ``cluster`` from its backups and capture chains."""
    complete = {m.id: m for m in manifests if _complete(m)}
    windows: list[Window] = []
    holes: dict[int, tuple[str, bool]] = {}  # chain end revision -> why the chain stops there, missing segments
    chained: set[str] = set()
    unplaced: list[Unplaced] = []
    own_bases = {listing.info.base_backup for listing in chains}
    others = [m for m in complete.values() if m.id not in own_bases]  # no chain's own base is another's later one
    for listing in chains:
        at = SegmentsAt(listing.segments)
        base = complete.get(listing.info.base_backup)
        written, misfits = later_bases(listing, others, base, at)
        unplaced += misfits
        if base is not None:
            start = (listing.info.base_revision, manifest_time(base))
        elif written:  # the chain's own base is gone: its oldest later base folded it
            base, written = written[0], written[1:]
            start = (start_revision(base), at.base(base).time)
        else:
            if listing.segments:
                _log.warning("chain %s of cluster %s: its base backup %s is not in the repository (or not "
                             "complete), so its %d segment(s) cannot be restored", listing.info.chain, cluster,
                             listing.info.base_backup, len(listing.segments))
            continue
        while True:
            chained.add(base.id)
            window, hole = _chain_window(base, start, listing)
            own = [m for m in written if window.covers(start_revision(m))]
            window = replace(window, later=tuple(at.base(m) for m in own))
            chained.update(m.id for m in own)
            windows.append(window)
            if hole:
                holes[window.last_revision] = (hole, True)
            elif listing.gap is not None:
                holes[window.last_revision] = (listing.gap.reason, False)
            later = [m for m in written if start_revision(m) > window.last_revision]
            if not hole or not later:
                break
            # Segments missing before a later base: the chain goes on from it, a window of its own.
            base, written = later[0], later[1:]
            start = (start_revision(base), at.base(base).time)
    for m in complete.values():
        if m.id not in chained:
            assert m.snapshot is not None
            t = manifest_time(m)
            windows.append(Window(m, m.snapshot.revision, m.snapshot.revision, t, t))
    windows.sort(key=lambda w: (w.first_revision, w.last_revision))
    return Timeline(cluster, tuple(windows), tuple(_gaps(windows, holes)),
                    tuple(u for u in unplaced if u.backup not in chained))


def later_bases(listing: ChainListing, manifests: Iterable[Manifest], base: Manifest | None,
                at: SegmentsAt) -> tuple[list[Manifest], list[Unplaced]]:
    """The full backups of ``manifests`` a restore in ``listing``'s chain can start from besides
    its own base ``base`` (None: deleted), by the revision their state is at; and those that
    would be one but for their times. ``at``: the chain's segments.

    Those ``synthesize`` wrote from the chain (:data:`SYNTHETIC_CHAIN`), and those taken while
    it captured: a backup holds the state the chain reached at R, the revision its state is at,
    only if it was taken of the same etcd cluster while the chain's revision was R: etcd's
    cluster id says the first, the times the second. R is :data:`STATE_REVISION`, which older
    backups do not record (their last row can be below it, when a compaction removed the
    tombstones after it: their state then lacks keys a point between the two holds), so they
    are not taken. R must be after the chain's base and held by a segment; the backup must
    have finished no earlier than capture first saw R and started no later than capture saw
    R+1 (to the seen times of the segments holding them, give or take :data:`PASSING_SLACK`; at
    the chain's newest revision, its last heartbeat there): else it is :class:`Unplaced`. A
    cluster restored from an older backup can keep its id and go through revisions the chain
    saw again, with other contents: its backups were taken after the chain saw those
    revisions. It must be encrypted as the chain is (to the recipients of ``base``, when it is
    still there: the identity that reads the chain reads it).
    """
    recipients = None if base is None else base.recipients
    found: list[Manifest] = []
    unplaced: list[Unplaced] = []
    for m in manifests:
        if m.labels.get(SYNTHETIC_CHAIN) == listing.info.chain:
            found.append(m)
        elif (seen := _seen_around(m, listing, recipients, at)) is not None:
            why = _misfit(m, *seen)
            if why is None:
                found.append(m)
            else:
                unplaced.append(Unplaced(m.id, listing.info.chain, why))
    return sorted(found, key=start_revision), unplaced


# How far a backup's clock and capture's may disagree (with capture's lag) and a backup still
# count as taken while the chain captured: see :func:`later_bases`.
PASSING_SLACK = timedelta(seconds=5)


def _seen_around(m: Manifest, listing: ChainListing, recipients: Sequence[str] | None,
                 at: SegmentsAt) -> tuple[datetime, datetime] | None:
    """When capture first saw the revision ``m``'s state is at, and at the latest its next one;
    None when ``m`` is no candidate for a later base of the chain (see :func:`later_bases`)."""
    revision = start_revision(m)
    if (STATE_REVISION not in m.labels or SYNTHETIC_CHAIN in m.labels
            or m.source.cluster_id != listing.info.cluster_id
            or not listing.info.base_revision < revision <= at.last_revision):
        return None
    holding = at.holding(revision)
    if not holding:
        return None
    if recipients is not None:
        if sorted(m.recipients) != sorted(recipients):
            return None
    elif (m.encryption is not None) != holding[0].encrypted:
        return None
    # Every segment holding a revision was first seen no later than it, last seen no earlier.
    seen_first = max(s.first_seen for s in holding)
    following = at.holding(revision + 1)
    if following:
        return seen_first, min(s.last_seen for s in following)
    if revision != at.last_revision:
        return None  # the revisions after it are missing
    beat = listing.heartbeat
    seen_next = max(s.last_seen for s in holding)
    if beat is not None and beat.revision == revision:
        seen_next = max(seen_next, beat.seen)
    return seen_first, seen_next


def _misfit(m: Manifest, seen_first: datetime, seen_next: datetime) -> str | None:
    finished, started = manifest_time(m), started_time(m)
    if finished < seen_first - PASSING_SLACK:
        return (f"it finished at {_text(finished)}, {(seen_first - finished).total_seconds():.0f} s before capture "
                f"saw revision {start_revision(m)} it holds")
    if started > seen_next + PASSING_SLACK:
        return (f"it started at {_text(started)}, {(started - seen_next).total_seconds():.0f} s after capture saw "
                f"the revision after {start_revision(m)}, which it does not hold")
    return None


def _complete(manifest: Manifest) -> bool:
    return manifest.status == "complete" and manifest.snapshot is not None


def cluster_timeline(repo: BackupRepository, cluster: str, without: frozenset[str] = frozenset()) -> Timeline:
    """``cluster``'s timeline as the repository lists it now; ``without``: names of segments
    found damaged, left out of it."""
    chains = repo.chain_store.chains(cluster)
    if without:
        chains = [replace(listing, segments=tuple(ref for ref in listing.segments if ref.name not in without))
                  for listing in chains]
    return build_timeline(cluster, list(repo.manifests(cluster)), chains)


def _chain_window(base: Manifest, start: tuple[int, datetime], listing: ChainListing) -> tuple[Window, str | None]:
    """The unbroken run of segments after ``start`` (the base's revision and time); the reason
    it breaks early, if it does."""
    covered, last_time = start
    run: list[SegmentRef] = []
    hole: str | None = None
    # A pack (:mod:`lifeboat.capture.packing`) is taken and the segments it holds are skipped.
    for ref in sorted(listing.segments, key=reach_first):
        if ref.last_revision <= covered:
            continue  # revisions the base holds, or a second copy of revisions already covered
        if ref.first_revision > covered + 1:
            hole = (f"segment with revisions {covered + 1}..{ref.first_revision - 1} of chain "
                    f"{listing.info.chain} is missing from the repository")
            break
        run.append(ref)
        covered = ref.last_revision
        last_time = max(last_time, ref.last_seen)
    beat = listing.heartbeat
    if hole is None and beat is not None and beat.revision == covered:
        last_time = max(last_time, beat.seen)
    elif hole is None and beat is not None and beat.revision > covered:
        hole = (f"chain {listing.info.chain} reached revision {beat.revision} but its segments end "
                f"at {covered}: the last segments are missing")
    window = Window(base, start[0], covered, start[1], last_time,
                    chain=listing, segments=tuple(run),
                    capturing=listing.gap is None and hole is None)
    return window, hole


def _gaps(windows: Sequence[Window], holes: dict[int, tuple[str, bool]]) -> list[TimelineGap]:
    gaps: list[TimelineGap] = []
    reach: Window | None = None  # the window reaching furthest so far
    for w in windows:
        if reach is not None and w.first_revision > reach.last_revision + 1:
            reason, missing = holes.get(reach.last_revision,
                                        ("not captured (no capture chain covers these revisions)", False))
            gaps.append(TimelineGap(reach.last_revision, w.first_revision, reach.last_time,
                                    w.first_time, reason, missing))
        if reach is None or w.last_revision > reach.last_revision:
            reach = w
    if reach is not None and reach.last_revision in holes:
        gaps.append(TimelineGap(reach.last_revision, None, reach.last_time, None, *holes[reach.last_revision]))
    return gaps


@dataclass(frozen=True)
class RestorePoint:
    """What a restore to ``revision`` needs: a base backup, then the segments after it."""

    revision: int
    window: Window
    segments: tuple[SegmentRef, ...]  # to apply in order (events after the base, up to revision)
    nearer_base: Manifest | None = None  # a later base of the window than its first (Window.bases)

    @property
    def base(self) -> Manifest:
        return self.nearer_base or self.window.base

    @property
    def base_revision(self) -> int:
        """The revision the base's state is at (a compaction mark can be above its last row)."""
        if self.nearer_base is not None:
            return start_revision(self.nearer_base)
        return self.window.first_revision

    @property
    def replays(self) -> bool:
        return self.revision > self.base_revision

    @property
    def doubled(self) -> frozenset[str]:
        """The names of the point's segments whose revisions other segments of its chain hold
        too (:func:`~lifeboat.catalog.chains.shared_revisions`): damage in one is not the end."""
        if not self.segments or self.window.chain is None:
            return frozenset()
        return frozenset(shared_revisions(self.window.chain.segments)).intersection(s.name for s in self.segments)

    @property
    def segment_bytes(self) -> int:
        """The stored size of the segments the replay downloads (staged on disk while it runs)."""
        return sum(s.size for s in self.segments) if self.replays else 0


def point_at_revision(timeline: Timeline, revision: int, base_id: str | None = None) -> RestorePoint:
    """The newest base at or before ``revision`` and the segments up to it, or a UsageError.

    Every base of every window covering ``revision`` is a candidate (a chain's own base, a
    synthetic backup written from it, a backup taken while it captured, a later chain's base):
    the newest needs the fewest events.
    ``base_id`` takes that base instead (a resumed restore's, already fetched and replayed).
    """
    covering = [w for w in timeline.windows if w.covers(revision)]
    if not covering:
        raise UsageError(_not_restorable(timeline, f"revision {revision}", revision=revision))
    candidates = [(b, w) for w in covering for b in w.bases()
                  if b.revision <= revision and base_id in (None, b.manifest.id)]
    if not candidates:
        raise UsageError(f"revision {revision} cannot be restored from base backup {base_id}: it is no longer "
                         "a complete backup in the repository, or its capture does not reach that revision")
    base, window = max(candidates, key=lambda found: (found[0].revision, found[1].first_revision))
    segments = tuple(s for s in window.segments if s.last_revision > base.revision and s.first_revision <= revision)
    return RestorePoint(revision, window, segments, None if base.manifest.id == window.base.id else base.manifest)


def point_at_time(timeline: Timeline, moment: datetime, now: datetime,
                  read: Callable[[Window, SegmentRef], Segment], base_id: str | None = None) -> RestorePoint:
    """The state as capture last saw it at or before ``moment``.

    ``read`` downloads one segment: only the one whose seen times straddle ``moment``.
    ``base_id`` as for :func:`point_at_revision`.
    """
    if moment > now:
        raise UsageError(f"time {_text(moment)} is in the future (now is {_text(now)})")
    holding = [w for w in timeline.windows if w.first_time <= moment <= w.last_time]
    if not holding:
        raise UsageError(_not_restorable(timeline, f"time {_text(moment)}", moment=moment))
    window = max(holding, key=lambda w: w.first_revision)
    revision = window.first_revision
    for ref in window.segments:
        if ref.first_seen > moment:
            break
        if ref.last_seen <= moment:
            revision = ref.last_revision
            continue
        seen = [r.revision for r in read(window, ref).revisions if r.seen <= moment]
        revision = seen[-1] if seen else revision
        break
    return point_at_revision(timeline, revision, base_id)


def _text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _not_restorable(timeline: Timeline, what: str, *, revision: int | None = None,
                    moment: datetime | None = None) -> str:
    """Why ``what`` cannot be restored, naming the nearest restorable points."""
    if not timeline.windows:
        return f"{what} cannot be restored: cluster {timeline.cluster} has no complete backup"
    if revision is not None:
        point = float(revision)
        span: Callable[[Window], tuple[float, float]] = lambda w: (w.first_revision, w.last_revision)
    else:
        assert moment is not None
        point = moment.timestamp()
        span = lambda w: (w.first_time.timestamp(), w.last_time.timestamp())
    before = [w for w in timeline.windows if span(w)[1] < point]
    after = [w for w in timeline.windows if span(w)[0] > point]
    if not before:
        oldest = min(timeline.windows, key=lambda w: span(w)[0])
        return f"{what} is before the oldest backup; the oldest restorable point is {_start(oldest)}"
    latest = max(before, key=lambda w: span(w)[1])
    gap = next((g for g in timeline.gaps if g.after_revision == latest.last_revision), None)
    why = f" ({gap.reason})" if gap else ""
    if not after:
        return (f"{what} is after the newest captured point{why}; the newest restorable point is "
                f"{_end(latest)}")
    following = min(after, key=lambda w: span(w)[0])
    return (f"{what} falls in a gap{why}; the nearest restorable points are {_end(latest)} "
            f"and {_start(following)}")


def _start(w: Window) -> str:
    return f"revision {w.first_revision} ({_text(w.first_time)})"


def _end(w: Window) -> str:
    return f"revision {w.last_revision} ({_text(w.last_time)})"
