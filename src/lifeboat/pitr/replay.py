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

import binascii
import json
import struct
from base64 import b64decode
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from lifeboat.catalog.segments import Predecessor, SegmentHeader, check_counts
from lifeboat.errors import IntegrityError
from lifeboat.snapshot.replay import encode_fields, lease_row, revision_key, tombstone_value

# etcd raises a TTL below its minimum (about 1.5 election timeouts) to the minimum when the
# lease is restored (lessor.go, Lease.refresh), so 1 s means "expire as soon as etcd can".
UNKNOWN_LEASE_TTL = 1


@dataclass
class ReplayFacts:
    """What the pass over the segments found."""

    events: int = 0
    last_revision: int = 0
    lease_of: dict[bytes, int] = field(default_factory=dict)  # key -> lease at the point (0: none)
    ttls: dict[int, int] = field(default_factory=dict)  # lease -> granted TTL, as capture recorded

    def leases_at_point(self) -> set[int]:
        return {lease for lease in self.lease_of.values() if lease}


class Linked(Protocol):
    """What :func:`walk` reads of a segment (a decoded one or just its header)."""

    @property
    def first_revision(self) -> int: ...

    @property
    def last_revision(self) -> int: ...

    @property
    def previous(self) -> Predecessor: ...


L = TypeVar("L", bound=Linked)


def walk(segments: Iterable[L], base_id: str, base_revision: int, up_to: int) -> Iterator[tuple[L, int]]:
    # ``base_id`` is the chain's base backup; ``base_revision`` where the replay starts (the
    # chain's base, or a synthetic full backup written from the chain later).
    """Each segment with the revision its events are applied after; a break is an IntegrityError.

    A segment must continue the chain: start right after what came before (or overlap it,
    when two writers stored the same revisions), and name as its predecessor what ends
    right before it. Anything else means a segment is missing or foreign: refused, never skipped.
    """
    covered = base_revision
    for segment in segments:
        if covered >= up_to:
            return
        before = segment.previous
        if before.last_revision != segment.first_revision - 1:
            raise IntegrityError(f"segment {segment.first_revision}..{segment.last_revision} says it follows "
                                 f"revision {before.last_revision}, not the one right before it")
        if before.kind == "base" and before.name != base_id:
            raise IntegrityError(f"segment {segment.first_revision}..{segment.last_revision} does not follow "
                                 f"base backup {base_id} (it names {before.kind} {before.name})")
        if segment.first_revision > covered + 1:
            raise IntegrityError(f"revisions {covered + 1}..{segment.first_revision - 1} are missing from "
                                 "the chain; refusing to replay past them")
        if segment.last_revision > covered:
            yield segment, covered
            covered = segment.last_revision
    if covered < up_to:
        raise IntegrityError(f"the chain ends at revision {covered}, before {up_to}; a segment is missing")


_ROW = struct.Struct(">II")


def compile_rows(segments: Iterable[SegmentHeader], base_id: str, base_revision: int, up_to: int,
                 out: BinaryIO) -> ReplayFacts:
    """One pass: check every segment up to ``up_to`` and write its MVCC rows to ``out``.

    Rows go to ``out`` as (4-byte key length, 4-byte value length, key, value), read back by
    :func:`stored_rows`: the lease rows must be known before the writer starts, and the events
    are parsed once.
    """
    facts = ReplayFacts(last_revision=base_revision)
    for header, after in walk(segments, base_id, base_revision, up_to):
        facts.ttls.update(header.leases)
        try:
            _compile(header, after, up_to, out, facts)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise IntegrityError(f"capture segment {header.first_revision}..{header.last_revision} of chain "
                                 f"{header.chain} is damaged: {exc}") from None
    return facts


def _compile(header: SegmentHeader, after: int, up_to: int, out: BinaryIO, facts: ReplayFacts) -> None:
    first = last = 0
    revisions = events = 0
    for line in header.body.splitlines():
        raw = json.loads(line)
        revision = int(raw["revision"])
        if revision <= last:
            raise ValueError(f"revision {revision} comes after {last}")
        first, last = first or revision, revision
        revisions += 1
        events += len(raw["events"])
        if not after < revision <= up_to:
            continue
        for sub, event in enumerate(raw["events"]):
            key = b64decode(event["key"], validate=True)
            if event["mod_revision"] != revision:
                raise ValueError(f"an event of revision {revision} says it was modified at {event['mod_revision']}")
            if event["type"] == "put":
                lease = int(event["lease"])
                row_key = revision_key(revision, sub)
                row_value = encode_fields(key, int(event["create_revision"]), revision, int(event["version"]),
                                          b64decode(event["value"], validate=True), lease)
            elif event["type"] == "delete":
                lease = 0
                row_key, row_value = revision_key(revision, sub, True), tombstone_value(key)
            else:
                raise ValueError(f"unknown event type {event['type']!r}")
            out.write(_ROW.pack(len(row_key), len(row_value)))
            out.write(row_key)
            out.write(row_value)
            facts.lease_of[key] = lease
            facts.events += 1
            facts.last_revision = revision
    check_counts(header, first, last, revisions, events)


def stored_rows(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """The rows :func:`compile_rows` wrote, in order."""
    with path.open("rb", buffering=1 << 20) as rows:
        while head := rows.read(_ROW.size):
            key_size, value_size = _ROW.unpack(head)
            yield rows.read(key_size), rows.read(value_size)


def lease_rows(facts: ReplayFacts, base_leases: frozenset[int]) -> dict[bytes, bytes]:
    """Bucket ``lease`` rows for leases held at the point that the base does not have."""
    found: dict[bytes, bytes] = {}
    for lease in sorted(facts.leases_at_point() - base_leases):
        key, value = lease_row(lease, facts.ttls.get(lease, UNKNOWN_LEASE_TTL))
        found[key] = value
    return found
