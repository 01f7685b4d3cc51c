"""Cutting the watch's revisions into segments: by time and by size, whole revisions only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from lifeboat.catalog.segments import SEEN_RUN_BYTES, CapturedRevision, Predecessor, Segment, event_bytes
from lifeboat.etcdapi.model import EventType, ReceivedEvents, WatchEvent


def revisions_of(arrived: Sequence[ReceivedEvents]) -> list[CapturedRevision]:
    """Watch responses as whole revisions in order, each seen when its response arrived."""
    grouped: list[CapturedRevision] = []
    for response in arrived:
        grouped.extend(group_revisions(response.events, datetime.fromtimestamp(response.received, timezone.utc)))
    return grouped


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


@dataclass
class SegmentBuilder:
    """The open segment: revisions received but not yet committed."""

    flush_interval: float
    max_bytes: int
    revisions: list[CapturedRevision] = field(default_factory=list)
    leases: dict[int, int] = field(default_factory=dict)
    size: int = 0

    def add(self, revisions: list[CapturedRevision]) -> None:
        """Add ``revisions``; :attr:`size` counts the raw bytes their records, index entries
        and seen times add to the segment (its header's fixed fields aside)."""
        self.revisions.extend(revisions)
        self.size += sum(event_bytes(e) for r in revisions for e in r.events)
        self.size += SEEN_RUN_BYTES * len({r.seen for r in revisions})

    @property
    def empty(self) -> bool:
        return not self.revisions

    def due(self, now: datetime, lead: float = 0.0) -> bool:
        """Time to close: the size is reached, or the oldest revision arrived ``flush_interval``
        ago less ``lead`` (what committing takes), so it is committed within ``flush_interval``."""
        if not self.revisions:
            return False
        return self.size >= self.max_bytes or self.seconds_left(now, lead) == 0.0

    def seconds_left(self, now: datetime, lead: float = 0.0) -> float:
        """How long until :meth:`due` turns true by time (0 while empty)."""
        if not self.revisions:
            return 0.0
        waited = (now - self.revisions[0].seen).total_seconds()
        return max(0.0, self.flush_interval - lead - waited)

    def close(self, cluster: str, chain: str, previous: Predecessor) -> Segment:
        segment = Segment(cluster, chain, previous, tuple(self.revisions), dict(self.leases))
        self.revisions, self.leases, self.size = [], {}, 0
        return segment
