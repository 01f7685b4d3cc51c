"""Capture segments: the events of a run of revisions, in a format a short script can read.

A segment's raw bytes are (then zstd, then optionally age, exactly like a backup's objects,
:mod:`lifeboat.catalog.codec`):

* line 1, the header (JSON): what the segment is (cluster, chain, revision range and seen
  times), the segment or base backup before it, the lease TTLs capture learned, and counts;
* version 3 (written now): the index of the records
  (:mod:`lifeboat.catalog.segment_index`), ``index.bytes`` long, in a zstd frame of its own
  together with the header, so that a point restore's survey reads it without decompressing
  the records;
* the events, in revision order and, inside a revision (one etcd transaction), in etcd's
  order, so an event's index is its sub revision. Versions 2 and 3: binary records, each the
  MVCC row etcd wrote for the event (:mod:`lifeboat.catalog.segment_records`), then a
  newline; the header maps revisions to the wall-clock times capture saw them (``seen``).
  Version 1 (read only): one JSON line per revision, keys and values in base64;
* the last line, ``{"end": {"sha256": ...}}``: the sha256 of every byte before it, so a
  truncated or altered segment is refused, never half applied.

``seen`` is the wall-clock time (UTC, RFC 3339, milliseconds) capture received the revision
from its watch: etcd events carry no time, so the time a revision was committed is at or
before ``seen``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate
from datetime import datetime, timezone
from typing import Any

from lifeboat.catalog.segment_index import (
    CREATED, DELETED, FIXED_BYTES, IndexEntry, SegmentIndex, encode_index, joined_index, read_index,
)
from lifeboat.catalog.segment_records import (
    DELETE, HEAD_SIZE, event_record, iter_records, key_of, record_event, version_of,
)
from lifeboat.errors import IntegrityError
from lifeboat.etcdapi.model import EventType, KeyValue, WatchEvent
from lifeboat.snapshot.replay import tombstone_value

SEGMENT_FORMAT = "lifeboat-segment"
SEGMENT_VERSION = 3
JSON_LINES_VERSION = 1  # what lifeboat wrote before version 2; still read
RECORDS_VERSION = 2  # records without an index, written before version 3; still read
READABLE_VERSIONS = (JSON_LINES_VERSION, RECORDS_VERSION, SEGMENT_VERSION)


@dataclass(frozen=True)
class CapturedRevision:
    """Every event of one main revision (one etcd transaction), and when capture saw it."""

    revision: int
    seen: datetime
    events: tuple[WatchEvent, ...]


@dataclass(frozen=True)
class Predecessor:
    """What comes right before a segment: another segment, or the chain's base backup."""

    kind: str  # "segment" or "base"
    last_revision: int
    name: str  # the previous segment's object name, or the base backup's id


@dataclass(frozen=True)
class Segment:
    """A closed run of revisions ``first_revision..last_revision`` of one chain."""

    cluster: str
    chain: str
    previous: Predecessor
    revisions: tuple[CapturedRevision, ...]
    leases: Mapping[int, int] = field(default_factory=dict)  # lease id -> granted TTL seconds

    def __post_init__(self) -> None:
        if not self.revisions:
            raise ValueError("a segment holds at least one revision")
        numbers = [r.revision for r in self.revisions]
        if numbers != sorted(set(numbers)):
            raise ValueError("a segment's revisions must be strictly increasing")
        if numbers[0] <= self.previous.last_revision:
            raise ValueError("a segment must start after the one before it")

    @property
    def first_revision(self) -> int:
        return self.revisions[0].revision

    @property
    def last_revision(self) -> int:
        return self.revisions[-1].revision

    @property
    def first_seen(self) -> datetime:
        return self.revisions[0].seen

    @property
    def last_seen(self) -> datetime:
        return self.revisions[-1].seen

    @property
    def event_count(self) -> int:
        return sum(len(r.events) for r in self.revisions)


def seen_text(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-12-01T03:04:05.123Z``."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_seen(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset")
    return moment.astimezone(timezone.utc)


def seen_runs(revisions: Sequence[CapturedRevision]) -> list[tuple[int, datetime]]:
    """``(first revision, seen)`` of each run of revisions capture saw at one time."""
    runs: list[tuple[int, datetime]] = []
    for rev in revisions:
        # The revisions of one watch response share one time: compare objects before texts.
        if not runs or (rev.seen != runs[-1][1] and seen_text(rev.seen) != seen_text(runs[-1][1])):
            runs.append((rev.revision, rev.seen))
    return runs


# The most one run of the header's "seen" list takes: ``[revision,"...Z"],``.
SEEN_RUN_BYTES = 1 + 20 + 2 + len("2026-12-01T03:04:05.123Z") + 2 + 1
# The most a put's KeyValue takes beyond its key and value: two tags and length varints, four
# tags and integer varints (etcd's marshaller writes each integer field only when not 0).
_KEY_VALUE_FIELDS_MAX = 2 * (1 + 5) + 4 * (1 + 10)


def event_bytes(event: WatchEvent) -> int:
    """The raw bytes ``event`` adds to a version 3 segment: its record and its index entry
    (exactly when the watch's KeyValue bytes were kept, as capture keeps them; else at most)."""
    key = len(event.kv.key)
    if event.type is EventType.DELETE:
        value = len(tombstone_value(event.kv.key))
    elif event.kv_bytes is not None:
        value = len(event.kv_bytes)
    else:
        value = key + len(event.kv.value) + _KEY_VALUE_FIELDS_MAX
    return HEAD_SIZE + value + FIXED_BYTES + key


def header_fields(segment: Segment) -> dict[str, Any]:
    """The header fields every format version has (version 2 adds ``seen``)."""
    return _header_dict(segment.cluster, segment.chain, (segment.first_revision, segment.last_revision),
                        (seen_text(segment.first_seen), seen_text(segment.last_seen)), segment.previous,
                        segment.leases, len(segment.revisions), segment.event_count)


def _header_dict(cluster: str, chain: str, revisions: tuple[int, int], seen: tuple[str, str], previous: Predecessor,
                 leases: Mapping[int, int], revision_count: int, events: int) -> dict[str, Any]:
    return {
        "format": SEGMENT_FORMAT, "version": SEGMENT_VERSION, "cluster": cluster, "chain": chain,
        "first_revision": revisions[0], "last_revision": revisions[1], "first_seen": seen[0], "last_seen": seen[1],
        "previous": {"kind": previous.kind, "name": previous.name, "last_revision": previous.last_revision},
        "leases": {str(lease): ttl for lease, ttl in sorted(leases.items())},
        "revisions": revision_count, "events": events,
    }


def encode_segment(segment: Segment) -> bytes:
    """The raw (uncompressed, unencrypted) bytes of ``segment``, format version 3."""
    return b"".join(encode_segment_frames(segment))


def _records_and_entries(segment: Segment) -> tuple[list[bytes], list[IndexEntry]]:
    """Every event's record (head, value) and its index entry."""
    records: list[bytes] = []
    entries: list[IndexEntry] = []
    offset = 0
    for rev in segment.revisions:
        for sub, event in enumerate(rev.events):
            head, value = event_record(rev.revision, sub, event)
            deleted = event.type is EventType.DELETE
            flags = DELETED if deleted else CREATED if event.kv.version == 1 else 0
            entries.append(IndexEntry(rev.revision, offset, 0 if deleted else event.kv.lease, event.kv.key, flags))
            records += (head, value)
            offset += len(head) + len(value)
    return records, entries


def encode_segment_frames(segment: Segment) -> tuple[bytes, bytes]:
    """``segment``'s raw bytes in the two parts stored as zstd frames of their own: the header
    and the index; the records and the end line."""
    records, entries = _records_and_entries(segment)
    _check_records_bytes(sum(map(len, records)))
    header = header_fields(segment)
    header["seen"] = [[revision, seen_text(moment)] for revision, moment in seen_runs(segment.revisions)]
    return _frames(header, encode_index(entries), records)


def joined_frames(headers: Sequence[SegmentHeader]) -> tuple[bytes, bytes]:
    """The frames of one version 3 segment holding every record of ``headers``: consecutive
    version 3 segments of one chain, each read whole and checked (:func:`read_header`).

    The records are copied as they are and the indexes joined, no event decoded: the result
    is what :func:`encode_segment_frames` writes for those events in one segment. Its
    predecessor is the first one's; lease TTLs are merged as a restore's survey merges them,
    a later segment's over an earlier one's. ValueError when they are not such segments.
    """
    check_consecutive(headers)
    if any(h.version != SEGMENT_VERSION or h.index is None or h.records_apart for h in headers):
        raise ValueError("only whole version 3 segments are joined")
    sizes = [len(h.body) for h in headers]
    _check_records_bytes(sum(sizes))
    starts = [0, *accumulate(sizes)][:-1]
    leases: dict[int, int] = {}
    seen: list[list[Any]] = []
    for h in headers:
        leases.update(h.leases)
        for revision, text in h.seen_text:
            if not seen or text != seen[-1][1]:  # a run goes on where the segment before ended
                seen.append([revision, text])
    first, last = headers[0], headers[-1]
    header = _header_dict(first.cluster, first.chain, (first.first_revision, last.last_revision),
                          (first.seen_text[0][1], last.seen_text[-1][1]), first.previous, leases,
                          sum(h.revisions for h in headers), sum(h.events for h in headers))
    header["seen"] = seen
    index = joined_index([h.index for h in headers if h.index is not None], starts)
    return _frames(header, index, [h.body for h in headers])


def check_consecutive(headers: Sequence[SegmentHeader]) -> None:
    """ValueError unless each segment of ``headers`` names the one before it as its predecessor,
    of the same cluster and chain."""
    for before, after in zip(headers, headers[1:]):
        if after.previous.last_revision != before.last_revision or (after.cluster, after.chain) != (
                before.cluster, before.chain):
            raise ValueError(f"segment {after.first_revision}..{after.last_revision} does not follow "
                             f"{before.first_revision}..{before.last_revision} of chain {before.chain}")


def _check_records_bytes(size: int) -> None:
    if size >= 1 << 32:  # the index's offsets are 4 bytes
        raise ValueError("a segment's records must stay under 4 GiB")


def _frames(header: dict[str, Any], index: bytes, records: Sequence[bytes | memoryview]) -> tuple[bytes, bytes]:
    """The header line and the index; the records, their newline and the end line (its sha256
    over every byte before it)."""
    header["index"] = {"bytes": len(index), "records_bytes": sum(map(len, records))}
    first = json.dumps(header, separators=(",", ":")).encode() + b"\n" + index
    digest = hashlib.sha256(first)
    for part in records:
        digest.update(part)
    digest.update(b"\n")
    end = json.dumps({"end": {"sha256": digest.hexdigest()}}, separators=(",", ":")).encode() + b"\n"
    return first, b"".join([*records, b"\n", end])


@dataclass(frozen=True)
class SegmentHeader:
    """A segment's first line, read after its end line's sha256 was checked."""

    cluster: str
    chain: str
    first_revision: int
    last_revision: int
    previous: Predecessor
    leases: Mapping[int, int]
    revisions: int
    events: int
    body: bytes | memoryview  # version 1: the revision lines; 2 and 3: the records (see read_header)
    version: int = SEGMENT_VERSION
    # Versions 2 and 3: (first revision, seen as written) of each run; parsed when first asked
    # (:attr:`seen`): a point restore's survey reads every header and never needs them.
    seen_text: tuple[tuple[int, str], ...] = ()
    body_offset: int = 0  # where ``body`` starts in the segment's raw bytes
    index: SegmentIndex | None = None  # version 3
    # Version 3 read from its first frame alone (header and index): ``body`` is empty, the
    # records (``records_bytes`` of them) start the next frame.
    records_apart: bool = False
    records_bytes: int = 0

    @cached_property
    def seen(self) -> tuple[tuple[int, datetime], ...]:
        """(first revision, seen) of each run (ValueError when a time is not one)."""
        return tuple((revision, parse_seen(text)) for revision, text in self.seen_text)

    def seen_of(self, revision: int) -> datetime:
        """When capture saw ``revision`` (version 2 and 3 headers)."""
        index = bisect_right(self.seen, revision, key=lambda run: run[0]) - 1
        if index < 0:
            raise ValueError(f"revision {revision} comes before the segment's first seen time")
        return self.seen[index][1]


def read_header(data: bytes | bytearray, where: str, *, check_sha256: bool = True,
                size: int | None = None, index_frame: bool = False) -> SegmentHeader:
    """Check the end line's sha256 and parse the header; an IntegrityError naming ``where``.

    ``check_sha256=False`` only for bytes this process checked already: a staged download, or
    what a whole zstd frame with a content checksum decompressed to (zstd compared the checksum,
    :func:`~lifeboat.catalog.codec.checksummed_frame_end`). The end line must be there either way.
    A ``bytearray`` holds the segment in its first ``size`` bytes (a reused decode buffer,
    :class:`~lifeboat.catalog.codec.FrameBuffer`); the header's ``body`` is then a view of it,
    not a copy, valid as long as the buffer is not reused.

    ``index_frame``: ``data`` may be a version 3 segment's first zstd frame alone, the header
    and the index, which its own content checksum covers (the caller checked the frame); the
    header then says ``records_apart``. Any other segment must be whole.
    """
    try:
        return _header(data, check_sha256, len(data) if size is None else size, index_frame)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise IntegrityError(f"capture segment {where} is damaged: {exc}") from None


def _header(data: bytes | bytearray, check_sha256: bool, size: int, index_frame: bool) -> SegmentHeader:
    first_line = data.index(b"\n", 0, size) + 1
    raw = json.loads(data[:first_line])
    version = raw.get("version")
    if raw.get("format") != SEGMENT_FORMAT or version not in READABLE_VERSIONS:
        raise ValueError(f"unknown segment format {raw.get('format')!r} {version!r}")
    body_offset = first_line
    index = None
    records_bytes = 0
    if version == SEGMENT_VERSION:
        body_offset += int(raw["index"]["bytes"])
        records_bytes = int(raw["index"]["records_bytes"])
        with memoryview(data) as view:
            index = read_index(view[first_line:body_offset], int(raw["events"]), records_bytes)
    fields = _fields(raw)
    if index_frame and version == SEGMENT_VERSION and size == body_offset:
        return SegmentHeader(**fields, body=b"", version=version, body_offset=body_offset, index=index,
                             records_apart=True, records_bytes=records_bytes)
    content_end = size
    while content_end and data[content_end - 1] == 0x0A:  # no copy of a large segment to strip
        content_end -= 1
    body_end = data.rfind(b"\n", 0, content_end) + 1
    if body_end <= body_offset:
        raise ValueError("no end line (truncated)")
    end = json.loads(data[body_end:size])["end"]
    with memoryview(data) as view:
        if check_sha256 and hashlib.sha256(view[:body_end]).hexdigest() != end["sha256"]:
            raise ValueError("its sha256 does not match its content")
    if version != JSON_LINES_VERSION and data[body_end - 1 : body_end] != b"\n":
        raise ValueError("its records do not end with a newline before the end line")
    # Versions 2 and 3's records end with a newline byte of their own, before the end line.
    body_stop = body_end if version == JSON_LINES_VERSION else body_end - 1
    if index is not None and body_stop - body_offset != records_bytes:
        raise ValueError(f"its records take {body_stop - body_offset} bytes, the header says {records_bytes}")
    body = data[body_offset:body_stop] if isinstance(data, bytes) else memoryview(data)[body_offset:body_stop]
    return SegmentHeader(**fields, body=body, version=int(version), body_offset=body_offset, index=index,
                         records_bytes=records_bytes)


def _fields(raw: dict[str, Any]) -> dict[str, Any]:
    """The header's fields that every version has, parsed."""
    previous = raw["previous"]
    seen = tuple((int(revision), str(text)) for revision, text in raw.get("seen", ()))
    if raw["version"] != JSON_LINES_VERSION and not seen:
        raise ValueError("the header has no seen times")
    return {
        "cluster": str(raw["cluster"]), "chain": str(raw["chain"]),
        "first_revision": int(raw["first_revision"]), "last_revision": int(raw["last_revision"]),
        "previous": Predecessor(str(previous["kind"]), int(previous["last_revision"]), str(previous["name"])),
        "leases": {int(lease): int(ttl) for lease, ttl in raw["leases"].items()},
        "revisions": int(raw["revisions"]), "events": int(raw["events"]), "seen_text": seen,
    }


def check_counts(header: SegmentHeader, first: int, last: int, revisions: int, events: int) -> None:
    """The content must be what the header says; ValueError when it is not."""
    expected = (header.first_revision, header.last_revision, header.revisions, header.events)
    if expected != (first, last, revisions, events):
        raise ValueError(f"header says revisions {expected[0]}..{expected[1]} ({expected[2]} revisions, "
                         f"{expected[3]} events), content has {first}..{last} ({revisions}, {events})")


def decode_segment(data: bytes, where: str) -> Segment:
    """Parse and check a segment's raw bytes; anything wrong is an IntegrityError naming ``where``."""
    return header_segment(read_header(data, where), where)


def header_segment(header: SegmentHeader, where: str) -> Segment:
    """The segment a whole segment's read header holds, every event decoded and checked
    against the header; anything wrong is an IntegrityError naming ``where``."""
    try:
        revisions = _json_lines(header) if header.version == JSON_LINES_VERSION else _records(header)
        segment = Segment(cluster=header.cluster, chain=header.chain, previous=header.previous,
                          revisions=revisions, leases=header.leases)
        check_counts(header, segment.first_revision, segment.last_revision, len(segment.revisions),
                     segment.event_count)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise IntegrityError(f"capture segment {where} is damaged: {exc}") from None
    if header.index is not None:
        check_indexed_records(header, where)
    return segment


def check_indexed_records(header: SegmentHeader, where: str) -> None:
    """IntegrityError (naming ``where``) unless a whole version 3 segment's index describes its
    records as they are (each one's place, revision, kind, lease, key and whether it created
    its key; sub revisions in order) and the header's counts are theirs: what a reader of the
    index relies on, checked without decoding an event's value."""
    try:
        index = header.index
        if index is None or header.records_apart:
            raise ValueError("it is not a whole version 3 segment")
        body = bytes(header.body)
        keys = index.key_list(0, len(index))
        records = revisions = due = 0
        current = -1
        for main, sub, kind, lease, value_at, value_end in iter_records(body):
            if records == len(index):
                raise ValueError(f"it holds more records than its index lists ({len(index)})")
            deleted = kind == DELETE
            flags = DELETED if deleted else CREATED if version_of(body, value_at, value_end) == 1 else 0
            if (value_at - HEAD_SIZE, main, 0 if deleted else lease, flags) != (
                    index.offsets[records], index.revisions[records], index.leases[records],
                    index.flags[records]) or key_of(body, value_at, value_end) != keys[records]:
                raise ValueError(f"record {records} is not what its index says")
            if main != current:
                current, due, revisions = main, 0, revisions + 1
            if sub != due:
                raise ValueError(f"revision {main} has sub revision {sub} where {due} was due")
            due += 1
            records += 1
        if records != len(index):
            raise ValueError(f"it holds {records} records, its index lists {len(index)}")
        check_counts(header, index.revisions[0], index.revisions[-1], revisions, records)
    except (ValueError, IndexError) as exc:
        raise IntegrityError(f"capture segment {where} is damaged: {exc}") from None


def _records(header: SegmentHeader) -> tuple[CapturedRevision, ...]:
    grouped: list[CapturedRevision] = []
    events: list[WatchEvent] = []
    current = 0
    body = bytes(header.body)  # values are sliced from it: never views of a reused buffer
    for main, sub, kind, lease, value_at, value_end in iter_records(body):
        if main != current:
            if events:
                grouped.append(CapturedRevision(current, header.seen_of(current), tuple(events)))
            current, events = main, []
        if sub != len(events):
            raise ValueError(f"revision {main} has sub revision {sub} where {len(events)} was due")
        events.append(record_event(body, main, kind, lease, value_at, value_end))
    if events:
        grouped.append(CapturedRevision(current, header.seen_of(current), tuple(events)))
    return tuple(grouped)


def _json_lines(header: SegmentHeader) -> tuple[CapturedRevision, ...]:
    return tuple(_revision(json.loads(line)) for line in bytes(header.body).splitlines())


def _revision(raw: dict[str, Any]) -> CapturedRevision:
    revision = int(raw["revision"])
    return CapturedRevision(revision, parse_seen(raw["seen"]),
                            tuple(_event(revision, e) for e in raw["events"]))


def _event(revision: int, raw: dict[str, Any]) -> WatchEvent:
    kv = KeyValue(
        key=base64.b64decode(raw["key"], validate=True),
        value=base64.b64decode(raw["value"], validate=True),
        create_revision=int(raw["create_revision"]), mod_revision=int(raw["mod_revision"]),
        version=int(raw["version"]), lease=int(raw["lease"]),
    )
    if kv.mod_revision != revision:
        raise ValueError(f"an event of revision {revision} says it was modified at {kv.mod_revision}")
    return WatchEvent(EventType(raw["type"]), kv)


def events_after(segment: Segment, after: int, up_to: int) -> Iterator[tuple[int, int, WatchEvent]]:
    """``(revision, sub revision, event)`` of every event with ``after < revision <= up_to``."""
    for rev in segment.revisions:
        if rev.revision <= after:
            continue
        if rev.revision > up_to:
            return
        for sub, event in enumerate(rev.events):
            yield rev.revision, sub, event
