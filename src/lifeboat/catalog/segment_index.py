"""A version 3 segment's index: what a point restore needs of every record, without its value.

The survey of a point restore (:mod:`lifeboat.pitr.replay`) must know, for every event of a
chain, its key, revision, kind, lease and whether the put created the key; it writes only a few
of the values. The records hold those facts between the values, so reading them meant
decompressing every value. The index repeats them in columns, ahead of the records and in a
zstd frame of its own, so the survey decompresses a tenth of the bytes and reads each column
with one call instead of a Python step per record.

Columns, each with one entry per record in record order (integers big-endian)::

    revisions   8 bytes each   the record's main revision
    offsets     4 bytes each   where the record starts, counted from the first record
    leases      8 bytes each   the lease id in the record's head (signed; 0: none)
    key sizes   4 bytes each   the length of the record's etcd key
    flags       1 byte each    bit 0: a delete; bit 1: a put that created the key (version 1)
    keys        the keys, one after another (their sizes above)
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, islice
from operator import le

DELETED = 1
CREATED = 2
# Bytes per record in the fixed-width columns: revision, offset, lease, key size, flags.
FIXED_BYTES = 8 + 4 + 8 + 4 + 1
_COLUMNS = (("Q", 8), ("I", 4), ("q", 8), ("I", 4), ("B", 1))
_SWAP = sys.byteorder == "little"  # the columns are big-endian; array() reads native order


@dataclass(frozen=True)
class IndexEntry:
    """One record as the index describes it (what the writer is given)."""

    revision: int
    offset: int
    lease: int
    key: bytes
    flags: int


def encode_index(entries: Sequence[IndexEntry]) -> bytes:
    """The index bytes of ``entries`` (in record order)."""
    columns = [array(code) for code, _ in _COLUMNS]
    revisions, offsets, leases, sizes, flags = columns
    for entry in entries:
        revisions.append(entry.revision)
        offsets.append(entry.offset)
        leases.append(entry.lease)
        sizes.append(len(entry.key))
        flags.append(entry.flags)
    return _encoded(columns, b"".join(entry.key for entry in entries))


def joined_index(indexes: Sequence[SegmentIndex], starts: Sequence[int]) -> bytes:
    """The index bytes of the records of several segments put one after another, those of
    ``indexes[n]`` starting ``starts[n]`` bytes into the records."""
    columns = [array(code) for code, _ in _COLUMNS]
    revisions, offsets, leases, sizes, flags = columns
    for index, start in zip(indexes, starts, strict=True):
        revisions.extend(index.revisions)
        offsets.extend([offset + start for offset in index.offsets])
        leases.extend(index.leases)
        sizes.extend(index.key_sizes)
        flags.extend(index.flags)
    return _encoded(columns, b"".join(index.keys for index in indexes))


def _encoded(columns: list[array[int]], keys: bytes) -> bytes:
    if _SWAP:
        for column in columns:
            column.byteswap()
    return b"".join(column.tobytes() for column in columns) + keys


@dataclass(frozen=True)
class SegmentIndex:
    """A parsed index: the columns as arrays, and the keys' bytes."""

    revisions: array[int]
    offsets: array[int]
    leases: array[int]
    key_sizes: array[int]
    flags: array[int]
    keys: bytes

    def __len__(self) -> int:
        return len(self.revisions)

    def key_list(self, start: int, stop: int) -> list[bytes]:
        """The keys of records ``start`` to ``stop`` (each a bytes object of its own)."""
        ends = list(accumulate(self.key_sizes))
        starts = [0, *ends[:-1]]
        return list(map(self.keys.__getitem__, map(slice, starts[start:stop], ends[start:stop])))

    def counts(self) -> tuple[int, int, int, int]:
        """First and last revision, number of revisions and of records."""
        revisions = self.revisions
        return revisions[0], revisions[-1], len(set(revisions)), len(revisions)


def read_index(data: bytes | bytearray | memoryview, records: int, records_bytes: int) -> SegmentIndex:
    """Parse an index of ``records`` records over ``records_bytes`` of records; ValueError when
    its sizes, order or offsets do not hold together."""
    if records < 1:
        raise ValueError("the index lists no record")
    fixed = FIXED_BYTES * records
    if len(data) < fixed:
        raise ValueError(f"the index is {len(data)} bytes, too short for {records} records")
    columns = []
    at = 0
    with memoryview(data) as view:
        for code, width in _COLUMNS:
            column = array(code)
            column.frombytes(view[at:at + width * records])
            at += width * records
            columns.append(column)
        keys = bytes(view[fixed:])
    if _SWAP:
        for column in columns:
            column.byteswap()
    revisions, offsets, leases, sizes, flags = columns
    if sum(sizes) != len(keys):
        raise ValueError(f"the index's key sizes add up to {sum(sizes)} bytes, its keys take {len(keys)}")
    if not all(map(le, revisions, islice(revisions, 1, None))):
        raise ValueError("the index's revisions are not in order")
    if offsets[0] != 0 or not all(map(int.__lt__, offsets, islice(offsets, 1, None))) \
            or offsets[-1] >= records_bytes:
        raise ValueError("the index's record offsets are not increasing inside the records")
    if max(flags) > DELETED | CREATED:
        raise ValueError("the index has an unknown flag")
    return SegmentIndex(revisions, offsets, leases, sizes, flags, keys)
