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
from typing import Protocol, TypeVar

from lifeboat.catalog.chains import decompressed
from lifeboat.catalog.segment_records import HEAD_SIZE, iter_records, key_of, row_at
from lifeboat.catalog.segments import SEGMENT_VERSION, Predecessor, SegmentHeader, check_counts
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
    lease_of: dict[bytes, int] = field(default_factory=dict)  # key -> its lease at the point, if it has one
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


@dataclass(frozen=True)
class StagedSegment:
    """A downloaded segment: its header (sha256 checked) and the local file holding its bytes
    (raw, or still in its zstd frame when ``compressed``)."""

    header: SegmentHeader
    path: Path
    compressed: bool = False

    @property
    def first_revision(self) -> int:
        return self.header.first_revision

    @property
    def last_revision(self) -> int:
        return self.header.last_revision

    @property
    def previous(self) -> Predecessor:
        return self.header.previous


@dataclass(frozen=True)
class RowRun:
    """Where the MVCC rows of one segment's replayed events are: ``path[start:end]`` (of the
    file's content once decompressed, when ``compressed``).

    Version 2 segments hold them as records (copied as they are); the events of a version 1
    segment were compiled into rows of (4-byte key length, 4-byte value length, key, value).
    """

    path: Path
    start: int
    end: int
    records: bool
    compressed: bool = False


def compile_rows(segments: Iterable[StagedSegment], base_id: str, base_revision: int, up_to: int,
                 spill: Path) -> tuple[ReplayFacts, list[RowRun]]:
    """First pass: check every segment up to ``up_to``; find the leases held at the point and
    where each segment's rows are (version 1 segments are compiled into files in ``spill``).

    The lease rows must be known before the writer starts, so the rows are read in a second
    pass (:func:`stored_rows`).
    """
    facts = ReplayFacts(last_revision=base_revision)
    runs: list[RowRun] = []
    for staged, after in walk(segments, base_id, base_revision, up_to):
        header = staged.header
        facts.ttls.update(header.leases)
        try:
            if header.version == SEGMENT_VERSION:
                run = _survey_records(staged, after, up_to, facts)
            else:
                run = _compile_json_lines(header, spill / f"{staged.path.name}.rows", after, up_to, facts)
        except (ValueError, KeyError, TypeError, IndexError, binascii.Error) as exc:
            raise IntegrityError(f"capture segment {header.first_revision}..{header.last_revision} of chain "
                                 f"{header.chain} is damaged: {exc}") from None
        if run is not None:
            runs.append(run)
    return facts, runs


def _survey_records(staged: StagedSegment, after: int, up_to: int, facts: ReplayFacts) -> RowRun | None:
    """Check a version 2 segment's records and note the leases of those in range."""
    header = staged.header
    body = header.body
    lease_of = facts.lease_of
    first = last = revisions = events = expected_sub = 0
    start = end = -1
    for main, sub, _kind, lease, value_at, value_end in iter_records(body):
        if main != last:
            if main < last:
                raise ValueError(f"revision {main} comes after revision {last}")
            first, last = first or main, main
            revisions += 1
            expected_sub = 0
        if sub != expected_sub:
            raise ValueError(f"revision {main} has sub revision {sub} where {expected_sub} was due")
        expected_sub += 1
        events += 1
        if not after < main <= up_to:
            continue
        if start < 0:
            start = value_at - HEAD_SIZE
        end = value_end
        # Only keys attached to a lease are remembered (the leases alive at the point).
        if lease:
            lease_of[key_of(body, value_at, value_end)] = lease
        elif lease_of:
            lease_of.pop(key_of(body, value_at, value_end), None)
        facts.events += 1
        facts.last_revision = main
    check_counts(header, first, last, revisions, events)
    if start < 0:
        return None
    return RowRun(staged.path, header.body_offset + start, header.body_offset + end, records=True,
                  compressed=staged.compressed)


def _compile_json_lines(header: SegmentHeader, rows: Path, after: int, up_to: int,
                        facts: ReplayFacts) -> RowRun | None:
    """A version 1 segment's events in range as MVCC rows in ``rows``."""
    first = last = 0
    revisions = events = 0
    lease_of = facts.lease_of
    with rows.open("wb", buffering=1 << 20) as out:
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
                    raise ValueError(f"an event of revision {revision} says it was modified at "
                                     f"{event['mod_revision']}")
                if event["type"] == "put":
                    lease = int(event["lease"])
                    row_key = revision_key(revision, sub)
                    row_value = encode_fields(key, int(event["create_revision"]), revision,
                                              int(event["version"]), b64decode(event["value"], validate=True), lease)
                elif event["type"] == "delete":
                    lease = 0
                    row_key, row_value = revision_key(revision, sub, True), tombstone_value(key)
                else:
                    raise ValueError(f"unknown event type {event['type']!r}")
                out.write(_ROW.pack(len(row_key), len(row_value)))
                out.write(row_key)
                out.write(row_value)
                if lease:
                    lease_of[key] = lease
                else:
                    lease_of.pop(key, None)
                facts.events += 1
                facts.last_revision = revision
        size = out.tell()
    check_counts(header, first, last, revisions, events)
    return RowRun(rows, 0, size, records=False) if size else None


def stored_rows(runs: Iterable[RowRun]) -> Iterator[tuple[bytes, bytes]]:
    """The MVCC rows of every run, in order (one segment's bytes in memory at a time)."""
    for run in runs:
        if run.compressed:
            data = decompressed(run.path.read_bytes())[run.start:run.end]
        else:
            with run.path.open("rb") as source:
                source.seek(run.start)
                data = source.read(run.end - run.start)
        if len(data) != run.end - run.start:
            raise IntegrityError(f"{run.path} changed while it was replayed")
        pos, end = 0, len(data)
        if run.records:
            while pos < end:
                key, value, pos = row_at(data, pos)
                yield key, value
        else:
            while pos < end:
                key_size, value_size = _ROW.unpack_from(data, pos)
                pos += _ROW.size
                yield data[pos:pos + key_size], data[pos + key_size:pos + key_size + value_size]
                pos += key_size + value_size


def lease_rows(facts: ReplayFacts, base_leases: frozenset[int]) -> dict[bytes, bytes]:
    """Bucket ``lease`` rows for leases held at the point that the base does not have."""
    found: dict[bytes, bytes] = {}
    for lease in sorted(facts.leases_at_point() - base_leases):
        key, value = lease_row(lease, facts.ttls.get(lease, UNKNOWN_LEASE_TTL))
        found[key] = value
    return found
