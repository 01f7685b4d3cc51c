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

A key created after the base (its first event a put of version 1) and deleted again before the
point gets no row at all, not even its tombstone: it is live neither at the base nor at the
point, and a tombstone hides only older rows of a key, which the base cannot hold live. etcd
(3.4, 3.5: mvcc/kvstore.go ``restoreIntoIndex``) skips a tombstone of a key it has not indexed
and deletes the row at its first compaction. Such keys are common (Kubernetes Events live an
hour): a fourth of the chain's rows in ``benchmarks/bench_pitr.py``, each read again by etcd's
start and by every check of the restored db. A delete at the point itself keeps its tombstone,
so the store's newest row, which etcd takes as its revision and a restore bumps from, is at the
point.

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
import re
import struct
from array import array
from base64 import b64decode
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import compress, filterfalse, repeat
from operator import sub
from pathlib import Path
from zlib import crc32

from lifeboat.catalog.chains import DamagedSegment
from lifeboat.catalog.codec import FrameBuffer
from lifeboat.catalog.segment_index import CREATED, DELETED, SegmentIndex
from lifeboat.catalog.segment_records import (
    DELETE, HEAD, HEAD_SIZE, PUT, PUT_FIELDS, key_of, lease_field, varint_value,
)
from lifeboat.catalog.segments import JSON_LINES_VERSION, SegmentHeader, check_counts
from lifeboat.errors import IntegrityError
from lifeboat.etcdapi.wire import MalformedValue, read_varint, write_varint
from lifeboat.snapshot.bbolt import ELEMENT_SIZE, PAGE_HEADER_SIZE
from lifeboat.snapshot.mvcc import KEY_TAG, encode_revision
from lifeboat.snapshot.replay import encode_fields, lease_row, tombstone_value

# etcd raises a TTL below its minimum (about 1.5 election timeouts) to the minimum when the
# lease is restored (lessor.go, Lease.refresh), so 1 s means "expire as soon as etcd can".
UNKNOWN_LEASE_TTL = 1

# A record's head as the second pass reads it: the revision key, the kind, the lease, the value's size.
_ROW_HEAD = struct.Struct(">17sBqI")
_MAIN_REVISION = struct.Struct(">Q")
_LEASE = struct.Struct(">q")
_MAIN_REVISION_LOW = struct.Struct(">4xI")  # the low half of the main revision, a revision key's first 8 bytes
_REVISION_LOW = 0xFFFFFFFF
_KEY_FIELD_TAG = bytes((KEY_TAG,))
# A record's head and the first two bytes of its value (a key's tag and, when under 128, its length).
_KEYED_HEAD = struct.Struct(HEAD.format + "BB")
# A short key (under 128 bytes: one length byte) as bytes, read from a record in any buffer.
_SHORT_KEY = tuple(struct.Struct(f"{size}s").unpack_from for size in range(0x80))
_TOMBSTONE = DELETE
_DELETE_BYTE = DELETE[0]
_PUT_BYTE = PUT[0]
_MARK = ord("_")
# An index's flags byte to its created bit, and to its deleted bit (bytes.translate tables).
_CREATED_BIT = bytes(flag & CREATED for flag in range(256))
_DELETED_BIT = bytes(flag & DELETED for flag in range(256))
# A row key of bucket ``key``: the revision, and a tombstone's mark after it.
ROW_KEY_MAX = 18
# Segments the second pass reads and decompresses ahead, each in a thread of its own.
READ_AHEAD = 2


@dataclass
class ReplayFacts:
    """What the pass over the segments found."""

    events: int = 0
    last_revision: int = 0
    rows: int = 0  # rows written: one per key the events touched, but those created and gone again
    row_bytes: int = 0  # the records of every event up to the point (more than the rows written)
    # What the rows written add to the db: the leaf pages they fill (:class:`LeafPages`) and
    # those pages' branch elements; of a version 1 or 2 segment, twice all its records.
    written_bytes: int = 0
    leases: set[int] = field(default_factory=set)  # the leases keys hold at the point
    ttls: dict[int, int] = field(default_factory=dict)  # lease -> granted TTL, as capture recorded

    def leases_at_point(self) -> set[int]:
        return self.leases


@dataclass(frozen=True)
class StagedSegment:
    """A downloaded segment: its header (sha256 checked) and the local file holding its bytes
    (raw, or still in its zstd frame when ``compressed``)."""

    header: SegmentHeader
    path: Path
    compressed: bool = False
    raw_size: int = 0  # its decompressed size when ``compressed`` (0: not recorded); see records_at
    # A version 3 segment staged whole but read from its first frame (``header.records_apart``):
    # where in ``path`` the frame of its records starts; ``raw_size`` is then that frame's.
    records_at: int = 0


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

    A record is a version 2 or 3 segment's (:mod:`lifeboat.catalog.segment_records`); the
    events of a version 1 segment are compiled into such records in a file of their own first.
    ``frame_at``: where the zstd frame holding them starts in ``path`` (a version 3 segment's
    second frame).

    What the survey took each record to be, which the second pass checks it is: ``key_sums``,
    the CRC-32 of how each record's value starts (the key's field: its tag, length and the
    key), started from the low 32 bits of the record's main revision when ``by_revision`` (a
    version 3 segment, whose survey read its index and not its records), from 0 otherwise
    (the survey read the records themselves), so one number checks both (see
    :func:`_key_sum`). Arrays of four bytes a row (the starts too), not the keys nor an int
    object per number: a million-event chain's rows are hundreds of thousands, a million when
    every event creates a key, and the restore's process holds them through the replay.
    """

    path: Path
    body_offset: int
    body_end: int
    starts: array[int]
    compressed: bool = False
    raw_size: int = 0  # what that frame decompresses to, as the first pass found (0: not recorded)
    frame_at: int = 0
    key_sums: array[int] = field(default_factory=lambda: array("I"))
    by_revision: bool = False
    segment: str = ""  # the segment it is read from, as an error names it (see _named)


@dataclass(frozen=True)
class _Source:
    """Where a segment's records are (as :class:`RowRun` has it); of a version 3 segment, the
    index's offsets and leases, which turn the survey's record numbers into offsets and leases."""

    path: Path
    frame_at: int
    body_offset: int
    body_end: int
    compressed: bool
    raw_size: int
    offsets: array[int] | None = None
    leases: array[int] | None = None
    revisions: array[int] | None = None
    segment: str = ""


def compile_rows(segments: Iterable[StagedSegment], base_id: str, base_revision: int, up_to: int,
                 spill: Path) -> tuple[ReplayFacts, list[RowRun]]:
    """First pass: check every segment up to ``up_to``; find, for each key an event touched,
    its newest record at or before the point, and the leases held there (version 1 segments
    are compiled into record files in ``spill``).

    Only that newest record is written: the restored store is marked compacted at the point
    (:func:`compaction_marks`), so an older revision of a key could never be read, and etcd
    would remove it at its next compaction. A deleted key keeps its tombstone, which hides the
    base's rows for it, unless its first event after the base created it (version 1): then
    the base holds no live row of it to hide and nothing is written for it (see the module's
    docstring). The records are read in a second pass (:func:`stored_rows`), once the lease
    rows are known: the writer needs them before it starts.
    """
    facts = ReplayFacts(last_revision=base_revision)
    survey = _Survey()
    sources: list[_Source] = []
    for number, (staged, after) in enumerate(walk(segments, base_id, base_revision, up_to)):
        header = staged.header
        facts.ttls.update(header.leases)
        try:
            sources.append(_surveyed(survey, staged, after, up_to, number, facts, spill))
        except (ValueError, KeyError, TypeError, IndexError, binascii.Error, IntegrityError) as exc:
            text = str(exc) if isinstance(exc, IntegrityError) else f"{_named(header)} is damaged: {exc}"
            raise DamagedSegment(text, (header.first_revision, header.last_revision)) from None
    facts.rows = len(survey.newest)
    keys = sorted(survey.newest, key=survey.newest.__getitem__)  # in the order their rows are written
    kept = list(map(survey.newest.__getitem__, keys))
    survey.newest.clear()
    survey.born.clear()
    # A key holds a lease at the point when its newest record there is the one that named it.
    slots = survey.lease_slots
    facts.leases = {slots[packed & _SLOT_MASK] for packed in kept if packed & _SLOT_MASK}
    return facts, _runs(sources, kept, keys, facts, slots)


def _surveyed(survey: _Survey, staged: StagedSegment, after: int, up_to: int, number: int, facts: ReplayFacts,
              spill: Path) -> _Source:
    """Survey one segment; where its records are."""
    header = staged.header
    if header.index is not None:
        check_counts(header, *header.index.counts())
        survey.indexed(header.index, header.records_bytes, after, up_to, number, facts)
        index = header.index
        if header.records_apart:
            return _Source(staged.path, staged.records_at, 0, header.records_bytes, True, staged.raw_size,
                           index.offsets, index.leases, index.revisions, _named(header))
        end = header.body_offset + header.records_bytes
        return _Source(staged.path, 0, header.body_offset, end, staged.compressed, staged.raw_size,
                       index.offsets, index.leases, index.revisions, _named(header))
    if header.version != JSON_LINES_VERSION:
        body, path, offset = header.body, staged.path, header.body_offset
        check_counts(header, *survey.records(body, after, up_to, number, facts))
    else:
        path, offset = spill / f"{staged.path.name}.records", 0
        body = _compile_json_lines(header, path)
        survey.records(body, after, up_to, number, facts)
    compressed = staged.compressed and path == staged.path
    return _Source(path, 0, offset, offset + len(body), compressed, staged.raw_size if compressed else 0,
                   segment=_named(header))


def _named(header: SegmentHeader) -> str:
    """A segment as the replay's errors name it: its revisions and chain (its staged copy is
    removed when the restore ends)."""
    return f"capture segment {header.first_revision}..{header.last_revision} of chain {header.chain}"


# A kept record is one int: its segment's number, its start in that segment's records, and
# (in the low bits) the slot of the lease it names (0: none): segment << 64 | start << 32 | slot.
_SLOT_BITS = 32
_SLOT_MASK = (1 << _SLOT_BITS) - 1
_START_MASK = 0xFFFFFFFF


def _runs(sources: list[_Source], kept: list[int], keys: list[bytes], facts: ReplayFacts,
          slots: list[int]) -> list[RowRun]:
    """The kept records (packed as above, ascending; ``keys``, theirs) grouped by segment; the
    leases that kept records of indexed segments name are added to ``facts.leases``, what they
    write to ``facts.written_bytes``."""
    runs: list[RowRun] = []
    at = 0
    pages = LeafPages()  # the kept records' rows, in the order they are written
    unread = 0
    while at < len(kept):
        number = kept[at] >> (32 + _SLOT_BITS)
        end = bisect_left(kept, (number + 1) << (32 + _SLOT_BITS), at)
        source = sources[number]
        starts = [(packed >> _SLOT_BITS) & _START_MASK for packed in kept[at:end]]
        seeds: Iterable[int] = repeat(0)
        indexed = False
        if source.offsets is not None and source.leases is not None:  # record numbers: turned into offsets
            indexed = True
            records = starts
            assert source.revisions is not None
            seeds = map(_REVISION_LOW.__and__, map(source.revisions.__getitem__, records))
            offsets = source.offsets
            starts = list(map(offsets.__getitem__, records))
            leases: Iterable[int] = list(map(source.leases.__getitem__, records))
            facts.leases.update(filter(None, leases))
            # A record ends where the next one starts, the last where the records end.
            ends = offsets[1:]
            ends.append(source.body_end - source.body_offset)
            pages.add(map(sub, map(ends.__getitem__, records), starts))
        else:  # a version 1 or 2 segment's record sizes are not read here: all of them, pages half full
            unread += 2 * (source.body_end - source.body_offset)
            leases = map(slots.__getitem__, map(_SLOT_MASK.__and__, kept[at:end]))
        runs.append(RowRun(source.path, source.body_offset, source.body_end, array("I", starts), source.compressed,
                           source.raw_size, source.frame_at, array("I", map(_key_sum, keys[at:end], seeds, leases)),
                           indexed, source.segment))
        at = end
    facts.written_bytes = pages.bytes() + unread
    return runs


class LeafPages:
    """What rows take in the pages the writer fills for them
    (:class:`~lifeboat.snapshot.tree_writer.LeafPacker`), with their pages' branch elements;
    the rows are told by the size of the records they are written from, in order.

    A row is its record's value under a row key (18 bytes at most: a tombstone's) with a leaf
    element, where the record had its head; a page takes rows until the next one does not fit,
    and a row larger than a page is a run of whole pages of its own. etcd's db pages are the
    machine's memory pages, 4 KiB where lifeboat runs (a larger page wastes less room)."""

    def __init__(self, page_size: int = 4096) -> None:
        self.page_size = page_size
        self.pages = 0
        self.size = PAGE_HEADER_SIZE  # of the page being filled

    def add(self, record_sizes: Iterable[int]) -> None:
        page_size, pages, size = self.page_size, self.pages, self.size
        grow_by = ELEMENT_SIZE + ROW_KEY_MAX - HEAD_SIZE
        for record in record_sizes:
            grow = record + grow_by
            if size + grow > page_size and size > PAGE_HEADER_SIZE:
                pages += -(-size // page_size)
                size = PAGE_HEADER_SIZE
            size += grow
        self.pages, self.size = pages, size

    def bytes(self) -> int:
        pages = self.pages + (-(-self.size // self.page_size) if self.size > PAGE_HEADER_SIZE else 0)
        return pages * (self.page_size + ELEMENT_SIZE + ROW_KEY_MAX)


class _Survey:
    """Each key's newest record so far (packed as above), and the slots of the leases records name.

    One int per key, not a tuple, and no second dict for the leased keys: this pass holds a
    row of state for every key the chain touched (hundreds of thousands), in the restore's
    memory budget.
    """

    def __init__(self) -> None:
        self.newest: dict[bytes, int] = {}
        # Keys whose first event after the base created them (version 1): absent at the base.
        # Only while they live: one deleted again leaves (Kubernetes Events come and go by the
        # million in a long chain), and a put that creates it again makes it born again.
        self.born: set[bytes] = set()
        self.lease_slots: list[int] = [0]
        self._slot_of: dict[int, int] = {}

    def _slot(self, lease: int) -> int:
        slot = self._slot_of.get(lease)
        if slot is None:
            slot = self._slot_of[lease] = len(self.lease_slots)
            if slot > _SLOT_MASK:
                raise ValueError("the chain names more leases than a replay can track")
            self.lease_slots.append(lease)
        return slot

    def indexed(self, index: SegmentIndex, records_bytes: int, after: int, up_to: int, number: int,
                facts: ReplayFacts) -> None:
        """Note each key's newest record up to the point from a version 3 segment's index, as
        :meth:`records` does from the records themselves.

        A record is noted by its number in the segment (:func:`_runs` turns it into an offset)
        and without a lease slot (the index keeps the lease). Each step is one call over a whole
        column or range (zip, compress, filterfalse): no Python step per record."""
        revisions = index.revisions
        low, high = bisect_right(revisions, after), bisect_right(revisions, up_to)
        if low == high:
            return
        keys = index.key_list(low, high)
        flags = index.flags[low:high].tobytes()
        tag = number << (32 + _SLOT_BITS)
        numbered = range(tag | low << _SLOT_BITS, tag | high << _SLOT_BITS, 1 << _SLOT_BITS)
        newest = self.newest
        born = self.born
        # A key not noted before was born after the base if its first record here created it.
        created_first = dict(zip(reversed(keys), reversed(flags.translate(_CREATED_BIT))))
        fresh = list(filterfalse(newest.__contains__, created_first))
        born.update(compress(fresh, map(created_first.__getitem__, fresh)))
        newest.update(zip(keys, numbered))
        # A key born after the base whose newest record is a delete before the point gets no row.
        deleted_last = dict(zip(keys, flags.translate(_DELETED_BIT)))
        gone = born.intersection(compress(deleted_last, deleted_last.values()))
        if revisions[high - 1] == up_to:  # a delete at the point keeps its tombstone
            at_point = bisect_left(revisions, up_to, low, high)
            gone = {key for key in gone if (newest[key] >> _SLOT_BITS) & _START_MASK < at_point}
        for key in gone:
            del newest[key]
        born.difference_update(gone)  # if created again, its put says so again
        offsets = index.offsets
        facts.events += high - low
        facts.row_bytes += (offsets[high] if high < len(offsets) else records_bytes) - offsets[low]
        facts.last_revision = revisions[high - 1]

    def records(self, body: bytes | memoryview, after: int, up_to: int, number: int,
                facts: ReplayFacts) -> tuple[int, int, int, int]:
        """Check a segment's records and note each key's newest record up to the point.

        ``body`` may be a view of a reused buffer: what is kept of it is copied (the keys).
        Returns the first and last revisions, and the counts of revisions and events, found."""
        short_key = _SHORT_KEY
        unpack = HEAD.unpack_from
        unpack_keyed = _KEYED_HEAD.unpack_from
        newest = self.newest
        born = self.born
        creates = _CREATES.match
        slot_of = self._slot_of
        tag = number << (32 + _SLOT_BITS)
        first = last = revisions = events = expected_sub = applied = applied_last = 0
        applied_from = applied_to = -1  # the records applied, of the revisions in (after, up_to]: one run
        pos, end = 0, len(body)
        keyed_end = end - _KEYED_HEAD.size  # a head and its value's first two bytes read at once up to here
        while pos < end:
            if pos <= keyed_end:
                main, mark, sub, kind, lease, size, key_tag, key_size = unpack_keyed(body, pos)
            elif pos + HEAD_SIZE <= end:
                main, mark, sub, kind, lease, size = unpack(body, pos)
                key_tag = key_size = 0x80  # not read: a value this close to the end is checked below
            else:
                raise ValueError(f"a record head is cut off at byte {pos}")
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
                if key_tag == KEY_TAG and key_size < 0x80 and value_at + 2 + key_size <= value_end:
                    key = short_key[key_size](body, value_at + 2)[0]
                    key_end = value_at + 2 + key_size
                else:  # a long key, or a damaged value: the general decoder says which
                    key = key_of(body, value_at, value_end)
                    key_end = value_at + 1 + _varint_size(len(key)) + len(key)
                if kind == DELETE:
                    if key in born and main != up_to:
                        del newest[key]  # created after the base, gone at the point: no row
                        born.discard(key)  # if created again, its put says so again
                    else:
                        newest[key] = tag | pos << _SLOT_BITS
                else:
                    if key not in newest and creates(body, key_end, value_end):
                        born.add(key)
                    if lease:
                        newest[key] = tag | pos << _SLOT_BITS | (slot_of.get(lease) or self._slot(lease))
                    else:
                        newest[key] = tag | pos << _SLOT_BITS
                if applied_from < 0:
                    applied_from = pos
                applied_to = value_end
                applied += 1
                applied_last = main
            pos = value_end
        if applied:
            facts.events += applied
            facts.row_bytes += applied_to - applied_from
            facts.last_revision = applied_last
        return first, last, revisions, events


def _varint_size(number: int) -> int:
    return 1 if number < 0x80 else (number.bit_length() + 6) // 7


def _key_sum(key: bytes, seed: int = 0, lease: int = 0) -> int:
    """The CRC-32 of how an ``mvccpb.KeyValue`` holding ``key`` starts: the key's field (its
    tag, its length as a varint, the key), started from ``seed`` instead of 0, then of the
    ``lease`` the record's head names (8 bytes, as the head holds it).

    Seeded with the low 32 bits of the record's main revision, the sum is another for the same
    key at another revision (the CRC of bytes of one length is a one-to-one function of its
    starting value), so one number per row checks both; a segment's revisions are far fewer
    than 2**32 apart. The lease is the one the survey made the lease rows from."""
    return crc32(_LEASE.pack(lease), crc32(key, crc32(write_varint(len(key)), crc32(_KEY_FIELD_TAG, seed))))


def _key_field_end(data: memoryview, value_at: int, value_end: int) -> int:
    """Where the key's field ends in a value starting at ``value_at`` (a key of 128 bytes or
    more: its length takes more than one byte); past ``value_end`` when the value is cut."""
    try:
        size, at = read_varint(data, value_at + 1, value_end)
    except MalformedValue:
        return value_end + 1
    return at + size


# A put's mvccpb.KeyValue past its key when the put created the key: version 1 (etcd 3.4/3.5
# mvcc/kvstore_txn.go ``put``: 1 when the index holds no live key). etcd writes the fields in
# order and leaves out only zeros, which a put's create and mod revisions and version never
# are: create_revision (field 2), mod_revision (3), then version (4) = 1, each a varint. Any
# other bytes do not match, which keeps the key's rows: always exact.
_CREATES = re.compile(rb"\x10[\x80-\xff]*[\x00-\x7f]\x18[\x80-\xff]*[\x00-\x7f]\x20\x01", re.DOTALL)


def _compile_json_lines(header: SegmentHeader, records: Path) -> bytes:
    """A version 1 segment's events as version 2 records, written to ``records`` and returned."""
    parts: list[bytes] = []
    first = last = revisions = events = 0
    for line in bytes(header.body).splitlines():
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
    """The MVCC rows of every run, in order (a few segments' bytes in memory at a time).

    The next runs' segments are read and decompressed in threads (zstd releases the GIL), each
    into a buffer of its own, while this one's rows are taken: decompressing is most of this
    pass, and two threads keep the second core busy with it. Every row is a copy of its bytes,
    so a row the writer still holds is never changed by a later segment's.

    A row is written only as etcd wrote it: a put's value names the record's revision and
    lease, which are the index's (the lease rows were made from the index's leases), and a
    delete's value holds only its key. A segment re-encoded with such a record changed is
    refused, as reading it whole refuses it."""
    unpack = _ROW_HEAD.unpack_from
    low_of = _MAIN_REVISION_LOW.unpack_from
    main_of = _MAIN_REVISION.unpack_from
    lease_fields: dict[int, bytes] = {}
    put_match, varint_of = PUT_FIELDS.match, varint_value
    pending = list(runs)
    # A buffer for each read in flight, and one for the run whose rows are being taken.
    free = [FrameBuffer() for _ in range(min(READ_AHEAD + 1, len(pending)))]
    with ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="segment-read") as pool:
        ahead: deque[tuple[Future[bytes | bytearray], FrameBuffer]] = deque()
        queued = 0
        for run in pending:
            while queued < len(pending) and free:
                buffer = free.pop()
                ahead.append((pool.submit(_run_bytes, pending[queued], buffer), buffer))
                queued += 1
            reading, buffer = ahead.popleft()
            data = reading.result()
            offset = run.body_offset + HEAD_SIZE
            if len(run.key_sums) != len(run.starts):
                raise ValueError("a run's key sums do not match its records")
            by_revision = run.by_revision
            with memoryview(data) as view:
                for start, key_sum in zip(run.starts, run.key_sums):
                    revision, kind, lease, length = unpack(data, offset - HEAD_SIZE + start)
                    value_at = offset + start
                    # An index's offset names a record's head: never a row from elsewhere.
                    if revision[8] != _MARK or (kind != _PUT_BYTE and kind != _DELETE_BYTE) \
                            or value_at + length > run.body_end or length < 2:
                        raise IntegrityError(f"{run.segment or run.path}: no record at byte {start} of its records, "
                                             "where its index says one starts")
                    # And the record the survey chose: its value starts with the key's field, and
                    # its revision is the one the index gave (the sum's seed, see _key_sum).
                    size = data[value_at + 1]
                    key_end = value_at + 2 + size if size < 0x80 else \
                        _key_field_end(view, value_at, value_at + length)
                    if key_end > value_at + length or crc32(data[offset - HEAD_SIZE + start + 18:value_at - 4], crc32(
                            view[value_at:key_end], low_of(revision)[0] if by_revision else 0)) != key_sum:
                        raise IntegrityError(f"{run.segment or run.path}: the record at byte {start} of its records "
                                             "is not the one its index describes (another key or revision): its "
                                             "index and records disagree (a writer's bug to report, or a segment "
                                             "lifeboat did not write); a point before this segment still restores")
                    if kind == _PUT_BYTE:
                        field = lease_fields.get(lease)
                        if field is None:
                            field = lease_fields[lease] = lease_field(lease)
                        # Its value names the head's revision and lease, laid out as etcd writes it.
                        found = put_match(data, key_end, value_at + length)
                        value_at_end: bytes | bytearray = b""
                        if found is None:
                            mod_revision = -1
                        else:
                            mod, value_size = found.groups()
                            tail = found.end() + (varint_of(value_size) if value_size is not None else 0)
                            mod_revision, value_at_end = varint_of(mod), data[tail:value_at + length]
                            if tail > value_at + length:  # a value's length past the record
                                mod_revision = -1
                        if mod_revision != main_of(revision)[0] or value_at_end != field:
                            raise IntegrityError(f"{run.segment or run.path}: the record at byte {start} of its "
                                                 "records is damaged: its value names another revision or lease "
                                                 "than its head and index; a point before this segment still "
                                                 "restores")
                    elif key_end != value_at + length or lease:
                        raise IntegrityError(f"{run.segment or run.path}: the delete at byte {start} of its records "
                                             "is damaged: its value holds more than its key, or it names a lease")
                    # A delete's row key ends with etcd's tombstone mark, the record's kind byte.
                    yield (revision + _TOMBSTONE if kind == _DELETE_BYTE else revision,
                           view[value_at:value_at + length].tobytes())
            free.append(buffer)  # every row of this run was taken (copied)


def _run_bytes(run: RowRun, buffer: FrameBuffer) -> bytes | bytearray:
    """``run``'s file content (decompressed into ``buffer`` when compressed), checked for size."""
    stored = run.path.read_bytes()
    size = len(stored)
    if not run.compressed:
        data: bytes | bytearray = stored
    else:
        try:
            with memoryview(stored) as view:
                size = buffer.decompress(view[run.frame_at:])
        except IntegrityError as exc:
            raise IntegrityError(f"{run.segment or run.path} is damaged: {exc}") from None
        data = buffer.data
    if size < run.body_end or (run.raw_size and size != run.raw_size):  # a frame cut short, too
        raise IntegrityError(f"{run.path} changed while it was replayed")
    return data


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
