"""Replaying a chain's segments onto its base snapshot, offline, with etcd's exact revisions.

The events are written as MVCC rows straight into a copy of the base snapshot's bbolt file
(:mod:`lifeboat.snapshot.writer`), never through a running etcd: replaying through etcd would
renumber every revision and let leases expire mid-replay. The result holds exactly the
source's keys, values, create/mod revisions and versions at the point, and its revision.

Leases: etcd re-attaches every key's lease from bucket ``lease`` when it starts; a key whose
lease is not there would keep the lease id but never expire. So every lease that a key alive
at the point is attached to, and that the base does not hold, is written to bucket ``lease``
with the granted TTL capture recorded (or :data:`UNKNOWN_LEASE_TTL` when capture could not
learn it: the lease was gone by the time capture asked). Like every lease after an etcd
restore, it runs its full TTL from when the restored etcd starts, and its keys go when it
expires unless a client keeps it alive.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from lifeboat.catalog.segments import Segment, events_after
from lifeboat.errors import IntegrityError
from lifeboat.etcdapi.model import EventType
from lifeboat.snapshot.replay import event_row, lease_row

# etcd raises a TTL below its minimum (about 1.5 election timeouts) to the minimum when the
# lease is restored (lessor.go, Lease.refresh), so 1 s means "expire as soon as etcd can".
UNKNOWN_LEASE_TTL = 1


@dataclass
class ReplayFacts:
    """What the first pass over the segments found."""

    events: int = 0
    last_revision: int = 0
    lease_of: dict[bytes, int] = field(default_factory=dict)  # key -> lease at the point (0: none)
    ttls: dict[int, int] = field(default_factory=dict)  # lease -> granted TTL, as capture recorded

    def leases_at_point(self) -> set[int]:
        return {lease for lease in self.lease_of.values() if lease}


def walk(segments: Iterable[Segment], base_id: str, base_revision: int, up_to: int) -> Iterator[tuple[Segment, int]]:
    """Each segment with the revision its events are applied after; a break is an IntegrityError.

    A segment must continue the chain: start right after what came before (or overlap it,
    when two writers stored the same revisions), and name as its predecessor what ends
    right before it. Anything else means a segment is missing or foreign: refused, never skipped.
    """
    covered = base_revision
    first = True
    for segment in segments:
        if covered >= up_to:
            return
        before = segment.previous
        if before.last_revision != segment.first_revision - 1:
            raise IntegrityError(f"segment {segment.first_revision}..{segment.last_revision} says it follows "
                                 f"revision {before.last_revision}, not the one right before it")
        if first and segment.first_revision == base_revision + 1 and \
                (before.kind != "base" or before.name != base_id):
            raise IntegrityError(f"segment {segment.first_revision}..{segment.last_revision} does not follow "
                                 f"base backup {base_id} (it names {before.kind} {before.name})")
        if segment.first_revision > covered + 1:
            raise IntegrityError(f"revisions {covered + 1}..{segment.first_revision - 1} are missing from "
                                 "the chain; refusing to replay past them")
        if segment.last_revision > covered:
            yield segment, covered
            covered = segment.last_revision
        first = False
    if covered < up_to:
        raise IntegrityError(f"the chain ends at revision {covered}, before {up_to}; a segment is missing")


def survey(segments: Iterable[Segment], base_id: str, base_revision: int, up_to: int) -> ReplayFacts:
    """First pass: check the chain up to ``up_to`` and learn the leases keys hold at that point."""
    facts = ReplayFacts(last_revision=base_revision)
    for segment, after in walk(segments, base_id, base_revision, up_to):
        facts.ttls.update(segment.leases)
        for revision, _sub, event in events_after(segment, after, up_to):
            facts.events += 1
            facts.last_revision = revision
            facts.lease_of[event.kv.key] = event.kv.lease if event.type is EventType.PUT else 0
    return facts


def rows(segments: Iterable[Segment], base_id: str, base_revision: int, up_to: int) -> Iterator[tuple[bytes, bytes]]:
    """Second pass: the MVCC rows of bucket ``key`` for every event after the base, up to ``up_to``."""
    for segment, after in walk(segments, base_id, base_revision, up_to):
        for revision, sub, event in events_after(segment, after, up_to):
            yield event_row(revision, sub, event)


def lease_rows(facts: ReplayFacts, base_leases: frozenset[int]) -> dict[bytes, bytes]:
    """Bucket ``lease`` rows for leases held at the point that the base does not have."""
    found: dict[bytes, bytes] = {}
    for lease in sorted(facts.leases_at_point() - base_leases):
        key, value = lease_row(lease, facts.ttls.get(lease, UNKNOWN_LEASE_TTL))
        found[key] = value
    return found
