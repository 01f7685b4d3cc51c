"""Replaying a chain's segments onto its base snapshot, offline, with etcd's exact revisions.

The events are written as MVCC rows straight into a copy of the base snapshot's bbolt file
(:mod:`lifeboat.snapshot.writer`), never through a running etcd: replaying through etcd would
renumber every revision and let leases expire mid-replay. The result holds exactly the
source's keys, values, create/mod revisions and versions at the point, and its revision.

History: of the revisions between the base and the point, only each touched key's newest row
is written (a delete's tombstone included), and the store is marked compacted at the point
(:func:`compaction_marks`), as if the source had been compacted there: a read or watch at an
earlier revision is refused by etcd as compacted, never answered from a partial history. Every
restore bumps the revision and compacts at the bump anyway (what ``etcdutl snapshot restore
--bump-revision --mark-compacted`` does), which removes the older rows when etcd starts; not
writing them keeps the restored db, and everything done to it after the replay, near the base's
size instead of growing with every event of the chain.

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
from base64 import b64decode
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lifeboat.catalog.chains import decompressed
from lifeboat.catalog.segment_records import DELETE, HEAD, HEAD_SIZE, PUT, key_of, row_at
from lifeboat.catalog.segments import SEGMENT_VERSION, SegmentHeader, check_counts
from lifeboat.errors import IntegrityError
from lifeboat.snapshot.mvcc import encode_revision
from lifeboat.snapshot.replay import encode_fields, lease_row, tombstone_value

# etcd raises a TTL below its minimum (about 1.5 election timeouts) to the minimum when the
# lease is restored (lessor.go, Lease.refresh), so 1 s means "expire as soon as etcd can".
UNKNOWN_LEASE_TTL = 1

_KEY_TAG = 0x0A  # mvccpb.KeyValue field 1 (key), length-delimited: etcd writes it first


@dataclass
class ReplayFacts:
    """What the pass over the segments found."""

    events: int = 0
    last_revision: int = 0
    rows: int = 0  # rows written: one per key the events touched
    row_bytes: int = 0  # the records of every event up to the point (more than the rows written)
    lease_of: dict[bytes, int] = field(default_factory=dict)  # key -> its lease at the point, if it has one
    ttls: dict[int, int] = field(default_factory=dict)  # lease -> granted TTL, as capture recorded

    def leases_at_point(self) -> set[int]:
        return {lease for lease in self.lease_of.values() if lease}


@dataclass(frozen=True)
class StagedSegment:
    """A downloaded segment: its header (sha256 checked) and the local file holding its bytes
    (raw, or still in its zstd frame when ``compressed``)."""

    header: SegmentHeader
    path: Path
    compressed: bool = False


def walk(segments: Iterable[StagedSegment], base_id: str, base_revision: int,
         up_to: int) -> Iterator[tuple[StagedSegment, int]]:
    # ``base_id`` is the chain's base backup; ``base_revision`` where the replay starts (the
    # chain's base, or a synthetic full backup written from the chain later).
    """Each segment with the revision its events are applied after; a break is an IntegrityError.

    A segment must continue the chain: start right after what came before (or overlap it,
    when two writers stored the same revisions), and name as its predecessor what ends
    right before it. Anything else means a segment is missing or foreign: refused, never skipped.
    """
    covered = base_revision
    for staged in segments:
        if covered >= up_to:
            return
        segment = staged.header
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
            yield staged, covered
            covered = segment.last_revision
    if covered < up_to:
        raise IntegrityError(f"the chain ends at revision {covered}, before {up_to}; a segment is missing")


@dataclass(frozen=True)
class RowRun:
    """The records of one segment that the replay writes: those at ``starts`` (ascending) in
    ``path``'s content from ``body_offset`` to ``body_end`` (once decompressed, when ``compressed``).

    A record is a version 2 segment's (:mod:`lifeboat.catalog.segment_records`); the events of
    a version 1 segment are compiled into such records in a file of their own first.
    """

    path: Path
    body_offset: int
    body_end: int
    starts: tuple[int, ...]
    compressed: bool = False


def compile_rows(segments: Iterable[StagedSegment], base_id: str, base_revision: int, up_to: int,
                 spill: Path) -> tuple[ReplayFacts, list[RowRun]]:
    """First pass: check every segment up to ``up_to``; find, for each key an event touched,
    its newest record at or before the point, and the leases held there (version 1 segments
    are compiled into record files in ``spill``).

    Only that newest record is written: the restored store is marked compacted at the point
    (:func:`compaction_marks`), so an older revision of a key could never be read, and etcd
    would remove it at its next compaction. A deleted key keeps its tombstone, which hides the
    base's row for it. The records are read in a second pass (:func:`stored_rows`), once the
    lease rows are known: the writer needs them before it starts.
    """
    facts = ReplayFacts(last_revision=base_revision)
    newest: dict[bytes, int] = {}  # key -> segment number << 32 | its newest record's start
    leased: dict[bytes, tuple[int, int]] = {}  # key -> its newest lease and where that record is
    sources: list[tuple[Path, int, int, bool]] = []
    for number, (staged, after) in enumerate(walk(segments, base_id, base_revision, up_to)):
        header = staged.header
        facts.ttls.update(header.leases)
        try:
            if header.version == SEGMENT_VERSION:
                body, path, offset = header.body, staged.path, header.body_offset
                check_counts(header, *_survey_records(body, after, up_to, number << 32, newest, leased, facts))
            else:
                path, offset = spill / f"{staged.path.name}.records", 0
                body = _compile_json_lines(header, path)
                _survey_records(body, after, up_to, number << 32, newest, leased, facts)
            sources.append((path, offset, offset + len(body), staged.compressed and path == staged.path))
        except (ValueError, KeyError, TypeError, IndexError, binascii.Error) as exc:
            raise IntegrityError(f"capture segment {header.first_revision}..{header.last_revision} of chain "
                                 f"{header.chain} is damaged: {exc}") from None
    facts.rows = len(newest)
    # A key holds a lease at the point when its newest record there is the one that named it.
    facts.lease_of = {key: lease for key, (lease, at) in leased.items() if newest[key] == at}
    return facts, _runs(sources, sorted(newest.values()))


def _runs(sources: list[tuple[Path, int, int, bool]], kept: list[int]) -> list[RowRun]:
    """The kept records (segment number << 32 | start, ascending) grouped by segment."""
    runs: list[RowRun] = []
    at = 0
    while at < len(kept):
        number = kept[at] >> 32
        end = bisect_left(kept, (number + 1) << 32, at)
        path, body_offset, body_end, compressed = sources[number]
        runs.append(RowRun(path, body_offset, body_end, tuple(packed & 0xFFFFFFFF for packed in kept[at:end]),
                           compressed))
        at = end
    return runs


def _survey_records(body: bytes, after: int, up_to: int, tag: int, newest: dict[bytes, int],
                    leased: dict[bytes, tuple[int, int]], facts: ReplayFacts) -> tuple[int, int, int, int]:
    """Check a segment's records; note each key's newest record up to the point in ``newest``
    (and in ``leased`` with its lease, when it has one).

    Returns the first and last revisions, and the counts of revisions and events, found."""
    unpack = HEAD.unpack_from
    first = last = revisions = events = expected_sub = applied = row_bytes = 0
    pos, end = 0, len(body)
    while pos < end:
        if pos + HEAD_SIZE > end:
            raise ValueError(f"a record head is cut off at byte {pos}")
        main, mark, sub, kind, lease, size = unpack(body, pos)
        value_at = pos + HEAD_SIZE
        value_end = value_at + size
        if mark != b"_" or (kind != PUT and kind != DELETE):
            raise ValueError(f"a record at byte {pos} is not a revision record")
        if value_end > end:
            raise ValueError(f"a record's value runs past the segment's end at byte {value_at}")
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
        if after < main <= up_to:
            key_size = body[value_at + 1]
            if body[value_at] == _KEY_TAG and key_size < 0x80 and value_at + 2 + key_size <= value_end:
                key = body[value_at + 2:value_at + 2 + key_size]
            else:  # a long key, or a damaged value: the general decoder says which
                key = key_of(body, value_at, value_end)
            newest[key] = tag | pos
            if lease:
                leased[key] = (lease, tag | pos)
            applied += 1
            row_bytes += value_end - pos
            facts.last_revision = main
        pos = value_end
    facts.events += applied
    facts.row_bytes += row_bytes
    return first, last, revisions, events


def _compile_json_lines(header: SegmentHeader, records: Path) -> bytes:
    """A version 1 segment's events as version 2 records, written to ``records`` and returned."""
    parts: list[bytes] = []
    first = last = revisions = events = 0
    for line in header.body.splitlines():
        raw = json.loads(line)
        revision = int(raw["revision"])
        if revision <= last:
            raise ValueError(f"revision {revision} comes after {last}")
        first, last = first or revision, revision
        revisions += 1
        events += len(raw["events"])
        for sub, event in enumerate(raw["events"]):
            key = b64decode(event["key"], validate=True)
            if event["mod_revision"] != revision:
                raise ValueError(f"an event of revision {revision} says it was modified at "
                                 f"{event['mod_revision']}")
            if event["type"] == "put":
                lease = int(event["lease"])
                kind, value = PUT, encode_fields(key, int(event["create_revision"]), revision,
                                                 int(event["version"]), b64decode(event["value"], validate=True),
                                                 lease)
            elif event["type"] == "delete":
                kind, lease, value = DELETE, 0, tombstone_value(key)
            else:
                raise ValueError(f"unknown event type {event['type']!r}")
            parts.append(HEAD.pack(revision, b"_", sub, kind, lease, len(value)))
            parts.append(value)
    check_counts(header, first, last, revisions, events)
    body = b"".join(parts)
    records.write_bytes(body)
    return body


def stored_rows(runs: Iterable[RowRun]) -> Iterator[tuple[bytes, bytes]]:
    """The MVCC rows of every run, in order (one segment's bytes in memory at a time)."""
    for run in runs:
        data = run.path.read_bytes()
        if run.compressed:
            data = decompressed(data)
        if len(data) < run.body_end:
            raise IntegrityError(f"{run.path} changed while it was replayed")
        offset = run.body_offset
        for start in run.starts:
            key, value, _next = row_at(data, offset + start)
            yield key, value


def lease_rows(facts: ReplayFacts, base_leases: frozenset[int]) -> dict[bytes, bytes]:
    """Bucket ``lease`` rows for leases held at the point that the base does not have."""
    found: dict[bytes, bytes] = {}
    for lease in sorted(facts.leases_at_point() - base_leases):
        key, value = lease_row(lease, facts.ttls.get(lease, UNKNOWN_LEASE_TTL))
        found[key] = value
    return found


def compaction_marks(point: int) -> dict[bytes, bytes]:
    """Bucket ``meta`` rows saying the store was compacted at ``point``, and finished.

    etcd (3.4, 3.5: mvcc/kvstore.go ``restore``) takes ``finishedCompactRev`` as the revision
    below which reads and watches are refused as compacted, and runs a compaction at start
    only when ``scheduledCompactRev`` is newer; both at the point means: nothing to do.
    """
    mark = encode_revision(point)
    return {b"scheduledCompactRev": mark, b"finishedCompactRev": mark}
