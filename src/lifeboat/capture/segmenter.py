"""Cutting the watch's revisions into segments: by time and by size, whole revisions only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from lifeboat.catalog.segments import SEEN_RUN_BYTES, CapturedRevision, Predecessor, Segment, event_bytes
from lifeboat.etcdapi.model import EventType, ReceivedEvents, WatchEvent


def revisions_of(arrived: Sequence[ReceivedEvents]) -> list[tuple[CapturedRevision, datetime | None]]:
    """Watch responses as whole revisions in order, each seen when its response arrived, with the
    time before which it did not exist when the feed knows one (``written_after``)."""
    grouped: list[tuple[CapturedRevision, datetime | None]] = []
    for response in arrived:
        after = _utc(response.written_after) if response.written_after is not None else None
        grouped.extend((revision, after) for revision in group_revisions(response.events, _utc(response.received)))
    return grouped


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def group_revisions(events: Sequence[WatchEvent], seen: datetime) -> list[CapturedRevision]:
    """One watch response's events as whole revisions, in order (they arrive sorted)."""
    grouped: list[CapturedRevision] = []
    run: list[WatchEvent] = []
    for event in events:
        if run and event.kv.mod_revision != run[0].kv.mod_revision:
            grouped.append(CapturedRevision(run[0].kv.mod_revision, seen, tuple(run)))
            run = []
        run.append(event)
    if run:
        grouped.append(CapturedRevision(run[0].kv.mod_revision, seen, tuple(run)))
    return grouped


def leases_of(revisions: list[CapturedRevision]) -> set[int]:
    return {e.kv.lease for r in revisions for e in r.events if e.type is EventType.PUT and e.kv.lease}


# What a stored segment may take beyond its records, index and seen times: the header's fixed
# fields, end line and zstd frame headers, each lease's TTL in the header, zstd's worst case for
# bytes that do not compress (ZSTD_compressBound: 1/256 more), age's tag of 16 bytes per 64 KiB
# chunk, and age's header (``envelope``, measured for the recipients).
_FIXED_OVERHEAD = 1024
_LEASE_BYTES = 48


def room_for_events(max_bytes: int, envelope: int) -> int:
    """The raw bytes of events a segment of at most ``max_bytes`` stored holds (no leases)."""
    return max_bytes - max_bytes // 256 - max_bytes // 4096 - _FIXED_OVERHEAD - envelope


def smallest_segment(envelope: int) -> int:
    """The smallest ``segment-max-bytes``, in whole KiB, that leaves at least half of each
    segment for events when age's header takes ``envelope`` bytes."""
    size = 4096
    while room_for_events(size, envelope) < size // 2:
        size += 1024
    return size


@dataclass
class SegmentBuilder:
    """The open segment: revisions received but not yet committed.

    A segment is kept within ``max_bytes`` as stored (compressed, and encrypted with an age
    header of ``envelope`` bytes, :meth:`~lifeboat.catalog.chains.ChainStore.envelope_bytes`):
    :meth:`add` refuses a revision that would take it past that, so the caller closes it
    first; only a single revision larger than that makes a larger segment. So a spool of at
    least ``max_bytes`` always holds a segment.
    """

    flush_interval: float
    max_bytes: int
    envelope: int = 0
    revisions: list[CapturedRevision] = field(default_factory=list)
    leases: dict[int, int] = field(default_factory=dict)
    size: int = 0  # raw bytes of the revisions' records, index entries and seen times
    # The earliest the oldest revision may have been written: what the flush interval counts from.
    since: datetime | None = None

    def add(self, revision: CapturedRevision, written_after: datetime | None = None) -> bool:
        """Add ``revision`` when it keeps the segment within ``max_bytes`` as stored (an empty
        segment takes any one revision); whether it did. When not, the caller closes the segment
        and adds it to the next.

        ``written_after``: a time before which the revision did not exist, when the feed knows
        one (see :class:`~lifeboat.etcdapi.model.ReceivedEvents`); the first revision's opens the
        segment's flush interval, else the time it was seen does.
        """
        added = self._bytes_of(revision)
        if self.revisions and self.size + added > self.limit:
            return False
        if not self.revisions:
            self.since = min(written_after, revision.seen) if written_after is not None else revision.seen
        self.size += added
        self.revisions.append(revision)
        return True

    def _bytes_of(self, revision: CapturedRevision) -> int:
        """The raw bytes ``revision`` adds: its events, and a seen run when its time is new."""
        added = sum(map(event_bytes, revision.events))
        if not self.revisions or self.revisions[-1].seen != revision.seen:
            added += SEEN_RUN_BYTES
        return added

    @property
    def limit(self) -> int:
        """The most raw bytes (see :attr:`size`) that stay within ``max_bytes`` once stored."""
        return room_for_events(self.max_bytes, self.envelope) - _LEASE_BYTES * len(self.leases)

    @property
    def empty(self) -> bool:
        return not self.revisions

    def due(self, now: datetime, lead: float = 0.0) -> bool:
        """Time to close: the size is reached, or the oldest revision may have been written
        ``flush_interval`` ago less ``lead`` (what committing takes) (:attr:`since`), so it is
        committed within ``flush_interval`` of its write."""
        if not self.revisions:
            return False
        return self.size >= self.limit or self.seconds_left(now, lead) == 0.0

    def seconds_left(self, now: datetime, lead: float = 0.0) -> float:
        """How long until :meth:`due` turns true by time (0 while empty)."""
        if self.since is None:
            return 0.0
        waited = (now - self.since).total_seconds()
        return max(0.0, self.flush_interval - lead - waited)

    def close(self, cluster: str, chain: str, previous: Predecessor) -> Segment:
        segment = Segment(cluster, chain, previous, tuple(self.revisions), dict(self.leases))
        self.revisions, self.leases, self.size, self.since = [], {}, 0, None
        return segment
