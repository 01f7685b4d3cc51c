"""Capture segments: the events of a run of revisions, in a format a short script can read.

A segment's raw bytes are JSON lines (UTF-8), then zstd, then optionally age, exactly like
a backup's objects (:mod:`lifeboat.catalog.codec`):

* line 1, the header: what the segment is (cluster, chain, revision range and seen times),
  the segment or base backup before it, the lease TTLs capture learned, and counts;
* one line per revision, in revision order: ``{"revision", "seen", "events": [...]}``; the
  events are in etcd's order inside the transaction, so an event's index is its sub revision;
* the last line, ``{"end": {"sha256": ...}}``: the sha256 of every byte before it, so a
  truncated or altered segment is refused, never half applied.

Keys and values are base64 (etcd keys and values are arbitrary bytes). ``seen`` is the
wall-clock time (UTC, RFC 3339, milliseconds) capture received the revision from its watch:
etcd events carry no time, so the time a revision was committed is at or before ``seen``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from lifeboat.errors import IntegrityError
from lifeboat.etcdapi.model import EventType, KeyValue, WatchEvent

SEGMENT_FORMAT = "lifeboat-segment"
SEGMENT_VERSION = 1


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _event_json(event: WatchEvent) -> dict[str, Any]:
    kv = event.kv
    return {
        "type": event.type.value, "key": _b64(kv.key), "value": _b64(kv.value),
        "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
        "version": kv.version, "lease": kv.lease,
    }


def encode_segment(segment: Segment) -> bytes:
    """The raw (uncompressed, unencrypted) bytes of ``segment``."""
    header = {
        "format": SEGMENT_FORMAT, "version": SEGMENT_VERSION,
        "cluster": segment.cluster, "chain": segment.chain,
        "first_revision": segment.first_revision, "last_revision": segment.last_revision,
        "first_seen": seen_text(segment.first_seen), "last_seen": seen_text(segment.last_seen),
        "previous": {"kind": segment.previous.kind, "name": segment.previous.name,
                     "last_revision": segment.previous.last_revision},
        "leases": {str(lease): ttl for lease, ttl in sorted(segment.leases.items())},
        "revisions": len(segment.revisions), "events": segment.event_count,
    }
    lines = [json.dumps(header, separators=(",", ":"))]
    for rev in segment.revisions:
        lines.append(json.dumps({
            "revision": rev.revision, "seen": seen_text(rev.seen),
            "events": [_event_json(e) for e in rev.events],
        }, separators=(",", ":")))
    body = ("\n".join(lines) + "\n").encode()
    end = json.dumps({"end": {"sha256": hashlib.sha256(body).hexdigest()}}, separators=(",", ":"))
    return body + end.encode() + b"\n"


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
    body: bytes  # the revision lines, one per line


def read_header(data: bytes, where: str) -> SegmentHeader:
    """Check the end line's sha256 and parse the header; an IntegrityError naming ``where``."""
    try:
        return _header(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"capture segment {where} is damaged: {exc}") from None


def _header(data: bytes) -> SegmentHeader:
    body_end = data.rstrip(b"\n").rfind(b"\n") + 1
    if body_end <= 0:
        raise ValueError("no end line (truncated)")
    end = json.loads(data[body_end:])["end"]
    if hashlib.sha256(data[:body_end]).hexdigest() != end["sha256"]:
        raise ValueError("its sha256 does not match its content")
    first_line = data.index(b"\n") + 1
    raw = json.loads(data[:first_line])
    if raw.get("format") != SEGMENT_FORMAT or raw.get("version") != SEGMENT_VERSION:
        raise ValueError(f"unknown segment format {raw.get('format')!r} {raw.get('version')!r}")
    previous = raw["previous"]
    return SegmentHeader(
        cluster=str(raw["cluster"]), chain=str(raw["chain"]),
        first_revision=int(raw["first_revision"]), last_revision=int(raw["last_revision"]),
        previous=Predecessor(str(previous["kind"]), int(previous["last_revision"]), str(previous["name"])),
        leases={int(lease): int(ttl) for lease, ttl in raw["leases"].items()},
        revisions=int(raw["revisions"]), events=int(raw["events"]), body=data[first_line:body_end],
    )


def check_counts(header: SegmentHeader, first: int, last: int, revisions: int, events: int) -> None:
    """The content must be what the header says; ValueError when it is not."""
    expected = (header.first_revision, header.last_revision, header.revisions, header.events)
    if expected != (first, last, revisions, events):
        raise ValueError(f"header says revisions {expected[0]}..{expected[1]} ({expected[2]} revisions, "
                         f"{expected[3]} events), content has {first}..{last} ({revisions}, {events})")


def decode_segment(data: bytes, where: str) -> Segment:
    """Parse and check a segment's raw bytes; anything wrong is an IntegrityError naming ``where``."""
    header = read_header(data, where)
    try:
        segment = Segment(
            cluster=header.cluster, chain=header.chain, previous=header.previous,
            revisions=tuple(_revision(json.loads(line)) for line in header.body.splitlines()),
            leases=header.leases,
        )
        check_counts(header, segment.first_revision, segment.last_revision, len(segment.revisions),
                     segment.event_count)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"capture segment {where} is damaged: {exc}") from None
    return segment


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
