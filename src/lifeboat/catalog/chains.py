"""Capture chains in the repository: where a chain, its segments, its end and its gap live.

Layout (see docs/repository-format.md)::

    clusters/<cluster>/chains/<chain>/chain.json        written once, before the first segment
    clusters/<cluster>/chains/<chain>/segments/<first>-<last>-<first seen>-<last seen>.seg.zst[.age]
    clusters/<cluster>/chains/<chain>/heartbeat.json    rewritten while capture is idle
    clusters/<cluster>/chains/<chain>/gap.json          written once when the chain can go no further

A chain's id is the id of its base backup; its first segment starts at the base revision + 1.
Every segment is written create-only, in one put: it exists only once complete. The names
carry the revision range and the seen times, so the timeline is read from a listing alone
(segments may be encrypted; the listing never needs an identity). Segments of format version
1 (JSON lines) are named ``.jsonl.zst[.age]``; they are read as they are.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from lifeboat.catalog.age_keys import Identity, Recipient
from lifeboat.catalog.codec import compressed_frames, decrypting, encrypting, frames_decompressed
from lifeboat.catalog.ids import check_backup_id, check_cluster_name
from lifeboat.catalog.records import SMALL_RECORD_MAX, read_record, record_json
from lifeboat.catalog.layout import (
    CHAIN_NAME, GAP_NAME, HEARTBEAT_NAME, SEGMENTS_DIR, chain_object_key, chain_prefix, chains_prefix, segment_key,
)
from lifeboat.catalog.segments import Segment, SegmentHeader, decode_segment, encode_segment_frames, read_header
from lifeboat.errors import AlreadyExists, IntegrityError, NotFound, UsageError
from lifeboat.store.base import ObjectStore

_log = logging.getLogger(__name__)

CHAIN_FORMAT = 1

_STAMP = "%Y%m%dT%H%M%S"
_SEGMENT_RE = re.compile(
    r"^(?P<first>\d{20})-(?P<last>\d{20})-(?P<t1>\d{8}T\d{6}\.\d{3}Z)-(?P<t2>\d{8}T\d{6}\.\d{3}Z)"
    r"\.(?:seg|jsonl)\.zst(?P<age>\.age)?$"
)


class SegmentGone(IntegrityError):
    """A segment in a listing is no longer in the repository: damaged chain, or (when a newer
    listing has a pack holding its revisions) deleted by ``lifeboat pack`` since the listing."""


class DamagedSegment(IntegrityError):
    """A segment in the repository that fails its checks; ``revisions``: the first and last it
    is named for. Other segments may hold the same revisions (a pack and the segments it
    packed, while both are kept), and be read instead."""

    def __init__(self, message: str, revisions: tuple[int, int] = (0, 0)) -> None:
        super().__init__(message)
        self.revisions = revisions  # kept when pickled (the survey's process sends it back)


def _stamp(moment: datetime) -> str:
    utc = moment.astimezone(timezone.utc)
    return f"{utc.strftime(_STAMP)}.{utc.microsecond // 1000:03d}Z"


def _unstamp(text: str) -> datetime:
    whole, millis = text[:-1].split(".")
    return datetime.strptime(whole, _STAMP).replace(
        microsecond=int(millis) * 1000, tzinfo=timezone.utc)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _started_first(listing: ChainListing) -> tuple[datetime, int]:
    try:
        started = _parse_time(listing.info.started_at)
    except ValueError:  # a record written by hand: first, as the oldest
        started = datetime.min.replace(tzinfo=timezone.utc)
    return started, listing.info.base_revision


@dataclass(frozen=True, order=True)
class SegmentRef:
    """A stored segment as its name describes it (no download needed)."""

    first_revision: int
    last_revision: int
    first_seen: datetime
    last_seen: datetime
    name: str
    size: int = 0
    # When the store says it was written (a listing's; None where the store gives none).
    modified: datetime | None = field(default=None, compare=False)

    @property
    def encrypted(self) -> bool:
        return self.name.endswith(".age")


def reach_first(ref: SegmentRef) -> tuple[int, int]:
    """Sort key of the order segments are read in: by first revision and, of those starting at
    one revision, the one reaching furthest first (a pack before the segments it holds)."""
    return ref.first_revision, -ref.last_revision


def shared_revisions(refs: Sequence[SegmentRef]) -> set[str]:
    """The names of the segments holding a revision some other segment of ``refs`` holds too (a
    pack and the segments it packed, while both are kept)."""
    ordered = sorted(refs, key=reach_first)
    shared: set[str] = set()
    reach = 0  # the last revision of the segments before, furthest
    for at, ref in enumerate(ordered):
        after = ordered[at + 1] if at + 1 < len(ordered) else None
        if (at and reach >= ref.first_revision) or (after is not None and after.first_revision <= ref.last_revision):
            shared.add(ref.name)
        reach = max(reach, ref.last_revision)
    return shared


def segment_name(segment: Segment, encrypted: bool) -> str:
    return named(segment.first_revision, segment.last_revision, segment.first_seen, segment.last_seen, encrypted)


def named(first: int, last: int, first_seen: datetime, last_seen: datetime, encrypted: bool) -> str:
    """The name of a segment of revisions ``first..last`` seen from ``first_seen`` to ``last_seen``."""
    return (f"{first:020d}-{last:020d}-{_stamp(first_seen)}-{_stamp(last_seen)}.seg.zst"
            + (".age" if encrypted else ""))


def parse_segment_name(name: str, size: int = 0, modified: datetime | None = None) -> SegmentRef | None:
    match = _SEGMENT_RE.match(name)
    if match is None:
        return None
    return SegmentRef(int(match["first"]), int(match["last"]), _unstamp(match["t1"]),
                      _unstamp(match["t2"]), name, size, modified)


@dataclass(frozen=True)
class ChainInfo:
    """``chain.json``: the chain's base backup and the cluster it follows."""

    chain: str
    cluster: str
    base_backup: str
    base_revision: int
    cluster_id: str  # hex, as in the manifest's source
    started_at: str  # RFC 3339
    format: int = CHAIN_FORMAT

    def to_json(self) -> bytes:
        return record_json(asdict(self))

    @classmethod
    def from_json(cls, data: bytes, where: str) -> ChainInfo:
        try:
            raw = json.loads(data)
            if raw.get("format") != CHAIN_FORMAT:
                raise ValueError(f"unsupported chain format {raw.get('format')!r}")
            return cls(chain=str(raw["chain"]), cluster=str(raw["cluster"]),
                       base_backup=str(raw["base_backup"]), base_revision=int(raw["base_revision"]),
                       cluster_id=str(raw["cluster_id"]), started_at=str(raw["started_at"]))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise IntegrityError(f"chain record {where} is malformed: {exc}") from None


@dataclass(frozen=True)
class Gap:
    """``gap.json``: the chain stops at ``last_revision``; revisions after it were not captured."""

    reason: str
    last_revision: int  # the last revision the chain holds
    detected_at: datetime

    def to_json(self) -> bytes:
        return json.dumps({"reason": self.reason, "last_revision": self.last_revision,
                           "detected_at": _rfc3339(self.detected_at)}, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Gap:
        try:
            raw = json.loads(data)
            return cls(str(raw["reason"]), int(raw["last_revision"]), _parse_time(raw["detected_at"]))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise IntegrityError(f"gap record {where} is malformed: {exc}") from None


@dataclass(frozen=True)
class Heartbeat:
    """``heartbeat.json``: at ``seen``, etcd's revision was still ``revision`` (capture idle)."""

    revision: int
    seen: datetime

    def to_json(self) -> bytes:
        return json.dumps({"revision": self.revision, "seen": _rfc3339(self.seen)}).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Heartbeat:
        try:
            raw = json.loads(data)
            return cls(int(raw["revision"]), _parse_time(raw["seen"]))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise IntegrityError(f"heartbeat {where} is malformed: {exc}") from None


@dataclass(frozen=True)
class ChainListing:
    """One chain as a listing shows it: its record, segments sorted by range, end marks."""

    info: ChainInfo
    segments: tuple[SegmentRef, ...]
    gap: Gap | None
    heartbeat: Heartbeat | None


# The most rage's grease stanza takes: its first line ("-> " and up to 66 characters) and its
# body (up to 100 bytes, base64 on lines of 64 characters), with their newlines.
_GREASE_BYTES = 3 + 66 + 1 + 136 + 3


def _grease_bytes(sealed: bytes) -> int:
    """The bytes of the grease stanzas in age's header of ``sealed`` (type ``<random>-grease``):
    stanzas start with a "-> " line and end where the next one, or the "---" line, starts."""
    header = sealed[:sealed.index(b"\n--- ")]
    found = 0
    for stanza in header.split(b"\n-> ")[1:]:
        if stanza.split(b" ", 1)[0].split(b"\n", 1)[0].endswith(b"-grease"):
            found += len(b"\n-> ") + len(stanza)
    return found


class ChainStore:
    """Reads and writes capture chains in an object store (create-only for what must be once)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def start(self, info: ChainInfo) -> None:
        """Write ``chain.json`` (create-only): the chain exists from now on."""
        key = chain_object_key(check_cluster_name(info.cluster), check_backup_id(info.chain), CHAIN_NAME)
        self.store.put_bytes(key, info.to_json(), create_only=True)

    def commit_segment(self, segment: Segment, recipients: Sequence[Recipient], zstd_level: int) -> SegmentRef:
        """Encode and store ``segment`` create-only; AlreadyExists if that range is there."""
        return self.commit_frames(segment.cluster, segment.chain, segment_name(segment, bool(recipients)),
                                  encode_segment_frames(segment), recipients, zstd_level)

    @staticmethod
    def encoded(segment: Segment, recipients: Sequence[Recipient], zstd_level: int) -> bytes:
        return sealed(encode_segment_frames(segment), recipients, zstd_level)

    def commit_frames(self, cluster: str, chain: str, name: str, frames: tuple[bytes, bytes],
                      recipients: Sequence[Recipient], zstd_level: int) -> SegmentRef:
        """Store a segment's raw frames (:func:`~lifeboat.catalog.segments.joined_frames`) as
        ``name``, create-only; AlreadyExists if it is there."""
        return self.put_encoded(cluster, chain, name, sealed(frames, recipients, zstd_level))

    @staticmethod
    def envelope_bytes(recipients: Sequence[Recipient]) -> int:
        """The most that encrypting a segment to ``recipients`` adds besides 16 bytes per 64 KiB:
        age's header with each recipient's stanza, its nonce and the last chunk's tag (0
        unencrypted). Measured once without the random "grease" stanza rage puts in every
        header, plus the most that stanza takes (a first line of at most 66 characters and a
        body of at most 100 bytes): the same for the same recipients, every time."""
        if not recipients:
            return 0
        sealed = b"".join(encrypting([b""], recipients))
        return len(sealed) - _grease_bytes(sealed) + _GREASE_BYTES

    def put_encoded(self, cluster: str, chain: str, name: str, data: bytes) -> SegmentRef:
        key = segment_key(cluster, chain, name)
        self.store.put_bytes(key, data, create_only=True)
        ref = parse_segment_name(name, len(data))
        assert ref is not None
        return ref

    def segments_from(self, cluster: str, chain: str, first_revision: int) -> list[str]:
        """The names of the segments of ``chain`` that start at ``first_revision`` (a listing of one prefix)."""
        prefix = segment_key(cluster, chain, f"{first_revision:020d}-")
        return [obj.key.rpartition("/")[2] for obj in self.store.list(prefix)]

    def record_gap(self, cluster: str, chain: str, gap: Gap) -> None:
        """Write ``gap.json`` once; a gap already recorded stays as it was."""
        try:
            self.store.put_bytes(chain_object_key(cluster, chain, GAP_NAME), gap.to_json(), create_only=True)
        except AlreadyExists:
            pass

    def beat(self, cluster: str, chain: str, heartbeat: Heartbeat) -> None:
        self.store.put_bytes(chain_object_key(cluster, chain, HEARTBEAT_NAME), heartbeat.to_json())

    def chains(self, cluster: str) -> list[ChainListing]:
        """Every chain of ``cluster`` (oldest first), from one listing plus its small records."""
        prefix = chains_prefix(check_cluster_name(cluster))
        grouped: dict[str, list[tuple[str, int, datetime | None]]] = {}
        for obj in self.store.list(prefix):
            chain, _, rest = obj.key[len(prefix):].partition("/")
            grouped.setdefault(chain, []).append((rest, obj.size, obj.modified))
        listings = []
        for chain in sorted(grouped):
            try:
                listing = self._listing(cluster, chain, grouped[chain])
            except NotFound:
                continue  # deleted while listed (chain.json goes last): no chain any more
            except IntegrityError as exc:
                # One damaged record must not stop list, timeline, prune or capture of the rest.
                _log.warning("%s; chain %s is left out of timelines, restores and pruning until "
                             "the record is repaired", exc, chain)
                continue
            if listing is not None:
                listings.append(listing)
        # By when each started (its base's finish: whole seconds from lifeboat before 2026-12-04,
        # milliseconds since), then by base revision.
        return sorted(listings, key=_started_first)

    def _listing(self, cluster: str, chain: str,
                 names: list[tuple[str, int, datetime | None]]) -> ChainListing | None:
        present = {name for name, _, _ in names}
        if CHAIN_NAME not in present:
            # Segments without a chain record are not a chain (see prune's orphans). Capture
            # writes the record first and a deletion removes it last: one missing is damage.
            held = sum(name.startswith(SEGMENTS_DIR) for name in present)
            if held:
                _log.warning("chain %s of cluster %s has %d segment(s) but no %s: it is left out of timelines, "
                             "restores and pruning until the record is restored", chain, cluster, held, CHAIN_NAME)
            return None
        base = chain_prefix(cluster, chain)
        where = f"{self.store.url}/{base}{CHAIN_NAME}"
        info = ChainInfo.from_json(read_record(self.store, base + CHAIN_NAME, SMALL_RECORD_MAX, "chain record"), where)
        if (info.cluster, info.chain) != (cluster, chain):
            # A copied folder: judged and deleted by the name it gives, it would take that chain with it.
            raise IntegrityError(f"chain record {where} names chain {info.chain} of cluster {info.cluster}, "
                                 "not the one it is stored as")
        segments = sorted(
            ref for name, size, modified in names if name.startswith(SEGMENTS_DIR)
            if (ref := parse_segment_name(name[len(SEGMENTS_DIR):], size, modified)) is not None
        )
        gap_data = self._get(base + GAP_NAME) if GAP_NAME in present else None
        gap = Gap.from_json(gap_data, base + GAP_NAME) if gap_data is not None else None
        beat = None
        if HEARTBEAT_NAME in present:
            try:
                beat_data = self._get(base + HEARTBEAT_NAME)
                beat = Heartbeat.from_json(beat_data, base + HEARTBEAT_NAME) if beat_data is not None else None
            except IntegrityError as exc:  # it only dates an idle stretch: the chain is whole without it
                _log.warning("%s; it is ignored", exc)
        return ChainListing(info, tuple(segments), gap, beat)

    def _get(self, key: str) -> bytes | None:
        """The record's bytes, or None when it went since the listing (the chain is being deleted)."""
        try:
            return read_record(self.store, key, SMALL_RECORD_MAX, "chain record")
        except NotFound:
            return None

    def recorded(self, cluster: str, chain: str) -> bool:
        """Whether the chain's record (``chain.json``) is in the repository."""
        return self.store.stat(chain_prefix(cluster, chain) + CHAIN_NAME) is not None

    def segment_where(self, cluster: str, chain: str, ref: SegmentRef) -> str:
        return f"{self.store.url}/{segment_key(cluster, chain, ref.name)}"

    def fetch_segment(self, cluster: str, chain: str, ref: SegmentRef,
                      identities: Sequence[Identity] | None) -> bytes:
        """A segment's raw bytes: downloaded, decrypted, decompressed (not yet checked)."""
        stored = self.fetch_compressed(cluster, chain, ref, identities)
        with segment_named(self.segment_where(cluster, chain, ref), ref):
            return frames_decompressed(stored)

    def fetch_compressed(self, cluster: str, chain: str, ref: SegmentRef,
                         identities: Sequence[Identity] | None) -> bytes:
        """A segment as stored, decrypted but still compressed (its zstd frames)."""
        key = segment_key(cluster, chain, ref.name)
        if ref.encrypted and not identities:
            raise UsageError(f"capture segment {ref.name} is encrypted: pass the age identity "
                             "(--identity, or the config file's encryption.identity-files)")
        try:
            chunks = self.store.get_stream(key)
            return b"".join(decrypting(chunks, identities) if ref.encrypted and identities else chunks)
        except NotFound:
            raise SegmentGone(f"capture segment {self.store.url}/{key} is missing; "
                                 "the chain cannot be replayed past it") from None
        except IntegrityError as exc:
            raise _naming(f"{self.store.url}/{key}", exc, ref) from None

    def read_segment(self, cluster: str, chain: str, ref: SegmentRef,
                     identities: Sequence[Identity] | None) -> Segment:
        """Download, decrypt, decompress and check one segment (DamagedSegment when damaged)."""
        raw = self.fetch_segment(cluster, chain, ref, identities)
        with segment_named(self.segment_where(cluster, chain, ref), ref):
            return self.check_segment(raw, cluster, chain, ref)

    def check_header(self, raw: bytes | bytearray, cluster: str, chain: str, ref: SegmentRef,
                     size: int | None = None, *, check_sha256: bool = True,
                     index_frame: bool = False) -> SegmentHeader:
        """Check the end line (its sha256 unless ``check_sha256`` is false) and that the header is
        what the name says (no full parse).

        ``raw``, ``size``, ``check_sha256`` and ``index_frame`` as
        :func:`~lifeboat.catalog.segments.read_header` takes them."""
        where = self.segment_where(cluster, chain, ref)
        header = read_header(raw, where, check_sha256=check_sha256, size=size, index_frame=index_frame)
        _require_as_named(header, where, cluster, chain, ref)
        return header

    def check_segment(self, raw: bytes, cluster: str, chain: str, ref: SegmentRef) -> Segment:
        """Decode raw segment bytes and check they are what the name says."""
        where = self.segment_where(cluster, chain, ref)
        segment = decode_segment(raw, where)
        _require_as_named(segment, where, cluster, chain, ref)
        return segment

    def delete_segments(self, cluster: str, chain: str, refs: Sequence[SegmentRef]) -> None:
        """Delete these segments, oldest first (by the store's batches: an interruption leaves
        the chain's tail whole)."""
        self.store.delete_many([segment_key(cluster, chain, ref.name) for ref in sorted(refs)])

    def delete_chain(self, cluster: str, chain: str) -> None:
        """Segments and end marks first, ``chain.json`` last (re-runnable)."""
        prefix = chain_prefix(cluster, chain)
        self.store.delete_many([obj.key for obj in self.store.list(prefix) if obj.key != prefix + CHAIN_NAME])
        self.store.delete(prefix + CHAIN_NAME)


def sealed(frames: tuple[bytes, bytes], recipients: Sequence[Recipient], zstd_level: int) -> bytes:
    """A segment's raw frames as stored: each a zstd frame, then age when there are recipients."""
    stored = compressed_frames(frames, zstd_level)
    return b"".join(encrypting([stored], recipients)) if recipients else stored


def _naming(where: str, damage: IntegrityError, ref: SegmentRef) -> DamagedSegment:
    """``damage`` found in the capture segment ``where`` (zstd's and age's messages name no object;
    one that names it already is kept as it is)."""
    named = f"capture segment {where}"
    text = str(damage)
    return DamagedSegment(text if text.startswith(named) else f"{named}: {text}",
                          (ref.first_revision, ref.last_revision))


@contextmanager
def segment_named(where: str, ref: SegmentRef) -> Iterator[None]:
    """Damage found inside the block is a DamagedSegment naming the capture segment ``where``
    (``ref``); a segment found missing stays :class:`SegmentGone`."""
    try:
        yield
    except (SegmentGone, DamagedSegment):
        raise
    except IntegrityError as exc:
        raise _naming(where, exc, ref) from None


def _require_as_named(found: SegmentHeader | Segment, where: str, cluster: str, chain: str,
                      ref: SegmentRef) -> None:
    """IntegrityError unless a segment holds the cluster, chain and revisions its name says."""
    if (found.first_revision, found.last_revision) != (ref.first_revision, ref.last_revision) \
            or found.chain != chain or found.cluster != cluster:
        raise IntegrityError(f"capture segment {where} holds revisions {found.first_revision}.."
                             f"{found.last_revision} of chain {found.chain}, not what its name says")
