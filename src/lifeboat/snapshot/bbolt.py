"""Read-only access to a bbolt database file, read by offsets with ``pread`` (see ``mapping``).

On-disk facts (bbolt v1.3.6, which etcd 3.4 and 3.5 use; page.go, bucket.go, db.go, tx.go):

- The file is an array of pages of ``page_size`` bytes. Every page starts with a 16-byte
  header: page id (u64), flags (u16), element count (u16), overflow (u32). A page with
  ``overflow = n`` occupies ``n + 1`` consecutive pages.
- Pages 0 and 1 are meta pages. The meta follows the header: magic, version, page size,
  flags (u32 each), root bucket (root page id, sequence; u64 each), freelist page id,
  high-water page id, txid, checksum (u64 each). The checksum is FNV-64a over the meta bytes
  before it. A reader uses the valid meta with the higher txid.
- Branch pages hold 16-byte elements (key position, key size: u32; child page id: u64);
  leaf pages hold 16-byte elements (flags, key position, key size, value size: u32). A
  position is relative to the element's own address; a value follows its key.
- A bucket is a leaf value with the bucket flag: root page id and sequence (u64 each). A
  root of 0 means an inline bucket: a leaf page follows the 16-byte header in the value.
- All integers are little-endian (bbolt writes native order; we support little-endian hosts'
  files, which is every amd64 and arm64 etcd).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from lifeboat.errors import SnapshotFormatError

from .mapping import PagedFile, paged, translated_faults
from .trailer import TRAILER_SIZE, has_trailer_length

PAGE_HEADER = struct.Struct("<QHHI")
META = struct.Struct("<IIIIQQQQQQ")
BUCKET_HEADER = struct.Struct("<QQ")
BRANCH_ELEMENT = struct.Struct("<IIQ")
LEAF_ELEMENT = struct.Struct("<IIII")
PAGE_HEADER_SIZE = 16
ELEMENT_SIZE = 16
META_CHECKSUMMED = 56

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF_FLAG = 0x01

MAGIC = 0xED0CDAED
VERSION = 2
NO_FREELIST = 0xFFFFFFFFFFFFFFFF
# bbolt stores a freelist longer than 0xFFFF ids with count 0xFFFF and the real count in
# the first u64 after the header (freelist.go).
FREELIST_COUNT_OVERFLOW = 0xFFFF

Buffer = Union[PagedFile, bytes]
# At most this many bytes of pages that follow each other in the file are read at once by
# :meth:`BoltFile.leaves_read_together`: under the 256 KiB from which malloc maps each buffer
# anew (see lifeboat.cli.malloc), a mapping whose every page faults when read into.
_RUN_BYTES = 128 << 10
# A leaf of a few rows of a few KiB each has an overflow page or two: the walk's next page
# follows after them.
_MOST_SKIPPED = 3

def fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass(frozen=True)
class Meta:
    """The meta page a reader uses: the valid one with the highest txid."""

    page_id: int
    page_size: int
    root: int
    freelist: int
    high_water: int
    txid: int
    flags: int = 0
    root_sequence: int = 0

    @property
    def tx_size(self) -> int:
        """Bytes of the database this transaction sees (bbolt ``Tx.Size``)."""
        return self.high_water * self.page_size


@dataclass(frozen=True)
class BucketRef:
    """Where a bucket's pages are: a root page id, or an inline leaf page (root 0)."""

    root: int
    inline: bytes | None = None


# A leaf page ready to read: (buffer, page offset, end of the page's bytes, element count).
Leaf = tuple[Buffer, int, int, int]
# A leaf whose buffer is in memory: pages read at once, or an inline bucket's page.
LeafInMemory = tuple[bytes, int, int, int]


class BoltFile:
    """An open, read-only bbolt file; use :meth:`open` as a context manager."""

    def __init__(self, path: Path, mm: PagedFile, file_size: int, txid: int | None = None) -> None:
        self.path = path
        self.mm = mm
        self.file_size = file_size
        self.has_trailer = has_trailer_length(file_size)
        self.db_size = file_size - TRAILER_SIZE if self.has_trailer else file_size
        self.meta = self._choose_meta(txid)
        self.page_size = self.meta.page_size
        if self.meta.tx_size > self.db_size:
            raise SnapshotFormatError(
                f"{path}: truncated: the database needs {self.meta.tx_size} bytes but the "
                f"file holds {self.db_size}; fetch or take the snapshot again"
            )

    @classmethod
    @contextmanager
    def open(cls, path: str | os.PathLike[str], *, txid: int | None = None) -> Iterator[BoltFile]:
        """Open ``path`` and read its meta; decoding faults inside the block are translated.

        ``txid``: read the tree of that transaction's meta page (the other one, older or newer,
        is ignored), not the newest; SnapshotFormatError if no valid meta page has that txid.
        """
        p = Path(path)
        with paged(p) as mm, translated_faults(p):
            size = len(mm)
            if size < PAGE_HEADER_SIZE + META.size:
                raise SnapshotFormatError(
                    f"{p}: {size} bytes is too short for a bbolt database; "
                    "it is not an etcd snapshot"
                )
            yield cls(p, mm, size, txid)

    def corrupted(self, what: str) -> SnapshotFormatError:
        return SnapshotFormatError(f"{self.path}: {what}; the snapshot is corrupted, use another copy")

    # -- meta -------------------------------------------------------------------------------

    def _read_meta(self, page_id: int, offset: int) -> Meta | None:
        end = offset + PAGE_HEADER_SIZE + META.size
        if end > self.db_size:
            return None
        body = self.mm[offset + PAGE_HEADER_SIZE : end]
        magic, version, page_size, flags, root, sequence, freelist, high_water, txid, checksum = (
            META.unpack(body)
        )
        if magic != MAGIC or version != VERSION or checksum != fnv64a(body[:META_CHECKSUMMED]):
            return None
        if page_size < 512 or page_size & (page_size - 1) or page_size > 1 << 20:
            # The meta is intact, so this is what the file says, not damage.
            raise SnapshotFormatError(
                f"{self.path}: bbolt page size {page_size} is not a power of two between "
                "512 bytes and 1 MiB; it is not an etcd snapshot lifeboat can read"
            )
        if page_id == 1 and offset != page_size:
            return None
        return Meta(page_id, page_size, root, freelist, high_water, txid, flags, sequence)

    def _choose_meta(self, txid: int | None) -> Meta:
        first = self._read_meta(0, 0)
        if first is not None:
            candidates = [first, self._read_meta(1, first.page_size)]
        else:
            # Meta 0 is unreadable, so its page size is unknown: meta 1 names its own offset.
            sizes = [1 << shift for shift in range(9, 21)]
            candidates = [self._read_meta(1, size) for size in sizes]
        valid = [m for m in candidates if m is not None]
        if not valid:
            if self.mm[16:20] != struct.pack("<I", MAGIC):
                raise SnapshotFormatError(
                    f"{self.path}: not a bbolt database (no bbolt magic number); "
                    "it is not an etcd snapshot"
                )
            raise self.corrupted("both bbolt meta pages fail their checksum")
        if txid is not None:
            valid = [m for m in valid if m.txid == txid]
            if not valid:
                raise self.corrupted(f"no valid meta page of transaction {txid}")
        meta = max(valid, key=lambda m: m.txid)
        if meta.high_water < 3 or not 2 <= meta.root < meta.high_water:
            raise self.corrupted(f"meta page {meta.page_id} has an impossible root or size")
        return meta

    # -- pages ------------------------------------------------------------------------------

    def tree_page(self, pgid: int, seen: bytearray, *, read_leaf: bool = True) -> tuple[int, int, int, int]:
        """Validate branch/leaf page ``pgid`` and mark it seen: (offset, end, flags, count).

        Not ``read_leaf``: a leaf's body (elements, keys, values, overflow) is left unread.
        """
        flags, count, overflow = self.page_header(pgid, seen)
        offset = pgid * self.page_size
        end = offset + (overflow + 1) * self.page_size
        if read_leaf or flags != LEAF_PAGE:
            self.mm.read(offset, end - offset)  # the whole page, once: its elements are sliced from it
        if offset + PAGE_HEADER_SIZE + count * ELEMENT_SIZE > end:
            raise self.corrupted(f"page {pgid} claims more elements than fit in it")
        return offset, end, flags, count

    def page_header(self, pgid: int, seen: bytearray) -> tuple[int, int, int]:
        """Validate the header of branch/leaf page ``pgid``, mark it seen: (flags, count, overflow)."""
        self._check_reference(pgid)
        return self._checked_header(pgid, self.mm.unpack_from(PAGE_HEADER, pgid * self.page_size), seen)

    def _check_reference(self, pgid: int) -> None:
        if not 2 <= pgid < self.meta.high_water:
            raise self.corrupted(f"page reference {pgid} is outside the database")

    def _checked_header(self, pgid: int, header: tuple[int, int, int, int], seen: bytearray) -> tuple[int, int, int]:
        header_id, flags, count, overflow = header
        last = pgid + overflow
        if header_id != pgid:
            raise self.corrupted(f"page {pgid} carries the id {header_id}")
        if last >= self.meta.high_water:
            raise self.corrupted(f"page {pgid} overflows past the end of the database")
        if flags != BRANCH_PAGE and flags != LEAF_PAGE:
            raise self.corrupted(f"page {pgid} has type {flags:#x} inside a bucket")
        if seen.find(1, pgid, last + 1) != -1:
            raise self.corrupted(f"page {pgid} is referenced more than once")
        seen[pgid : last + 1] = b"\x01" * (overflow + 1)
        return flags, count, overflow

    def branch_children(self, pgid: int, offset: int, count: int) -> list[int]:
        if count == 0:
            raise self.corrupted(f"branch page {pgid} is empty")
        raw = self.mm.unpack_from(struct.Struct("<" + "IIQ" * count), offset + PAGE_HEADER_SIZE)
        return list(raw[2::3])

    def branch_entries(self, pgid: int, offset: int, count: int) -> list[tuple[bytes, int]]:
        """(first key, child page id) of each element of branch page ``pgid``."""
        if count == 0:
            raise self.corrupted(f"branch page {pgid} is empty")
        element = offset + PAGE_HEADER_SIZE
        end = offset + (self.mm.unpack_from(PAGE_HEADER, offset)[3] + 1) * self.page_size
        entries = []
        for pos, ksize, child in BRANCH_ELEMENT.iter_unpack(
            self.mm[element : element + count * ELEMENT_SIZE]
        ):
            if element + pos + ksize > end:
                raise self.corrupted(f"a branch element of page {pgid} points past its page")
            entries.append((bytes(self.mm[element + pos : element + pos + ksize]), child))
            element += ELEMENT_SIZE
        return entries

    def leaf_items(self, leaf: Leaf) -> list[tuple[int, bytes, bytes]]:
        """(flags, key, value) of each element of a leaf page, in page order."""
        buf = leaf[0]
        return [
            (flags, bytes(buf[kstart:kend]), bytes(buf[kend:vend]))
            for flags, kstart, kend, vend in self.leaf_elements(leaf)
        ]

    def last_key(self, bucket: BucketRef) -> bytes | None:
        """The greatest key of ``bucket`` (following the right edge), or None when it is empty."""
        if bucket.inline is None:
            pgid, seen = bucket.root, self.new_seen()
            while True:
                offset, end, flags, count = self.tree_page(pgid, seen)
                if flags == LEAF_PAGE:
                    break
                pgid = self.branch_children(pgid, offset, count)[-1]
            if count:
                items = self.leaf_items((self.mm, offset, end, count))
                return items[-1][1]
        # An empty right-most leaf (bbolt leaves one behind only as an empty root): scan.
        last = None
        for key, _value, _buf, _start, _end in self.items(bucket, self.new_seen()):
            last = key
        return last

    def leaves(self, bucket: BucketRef, seen: bytearray) -> Iterator[Leaf]:
        """The bucket's leaf pages in key order, marking every page visited in ``seen``."""
        if bucket.inline is not None:
            yield self.inline_leaf(bucket.inline)
            return
        stack = [bucket.root]
        while stack:
            pgid = stack.pop()
            offset, end, flags, count = self.tree_page(pgid, seen)
            if flags == LEAF_PAGE:
                yield self.mm, offset, end, count
            else:
                children = self.branch_children(pgid, offset, count)
                children.reverse()
                stack.extend(children)

    def leaves_read_together(self, bucket: BucketRef, seen: bytearray, *,
                             from_key: bytes | None = None) -> Iterator[tuple[LeafInMemory, Buffer, int]]:
        """:meth:`leaves`, with the same checks, each with where its bytes can be read again:
        (leaf, that buffer, the offset there of the leaf's own buffer).

        ``from_key``: only the leaves that may hold it or a greater key (the first of them may
        hold smaller ones too); the subtrees before it are neither read nor marked in ``seen``.

        Where the pages the walk visits next follow each other in the file (lifeboat's writer
        and a replay append a tree's new leaves in key order), one ``pread`` reads them all; any
        other page is read once, where :meth:`leaves` reads each page twice (its header, then
        the page). Only pages the walk visits are read: a snapshot etcd wrote has its leaves
        scattered. A leaf's buffer is dropped with the next read.
        """
        if bucket.inline is not None:
            yield self.inline_leaf(bucket.inline), bucket.inline, 0
            return
        page_size = self.page_size
        run, base = b"", 0
        stack = [bucket.root]
        while stack:
            pgid = stack.pop()
            self._check_reference(pgid)
            offset = pgid * page_size
            if not base <= offset <= base + len(run) - page_size:
                run, base = self.mm.read(offset, self._pages_together(pgid, stack) * page_size), offset
            flags, count, overflow = self._checked_header(pgid, PAGE_HEADER.unpack_from(run, offset - base), seen)
            end = offset + (overflow + 1) * page_size
            if end > base + len(run):
                run, base = self.mm.read(offset, end - offset), offset
            if offset + PAGE_HEADER_SIZE + count * ELEMENT_SIZE > end:
                raise self.corrupted(f"page {pgid} claims more elements than fit in it")
            if flags == LEAF_PAGE:
                yield (run, offset - base, end - base, count), self.mm, base
                continue
            if count == 0:
                raise self.corrupted(f"branch page {pgid} is empty")
            elements = struct.unpack_from("<" + "IIQ" * count, run, offset - base + PAGE_HEADER_SIZE)
            children = list(elements[2::3])
            if from_key is not None:
                del children[:self._first_child_from(pgid, run, offset - base, end - base, elements, from_key)]
            children.reverse()
            stack.extend(children)

    def _first_child_from(self, pgid: int, page: Buffer, at: int, end: int, elements: tuple[int, ...],
                          key: bytes) -> int:
        """Which child of the branch page at ``page[at:end]`` (its elements unpacked) is the first
        whose subtree may hold ``key`` or a greater one: the last whose first key is at most ``key``."""
        first = 0
        for n in range(1, len(elements) // 3):
            start = at + PAGE_HEADER_SIZE + n * ELEMENT_SIZE + elements[3 * n]
            if start + elements[3 * n + 1] > end:
                raise self.corrupted(f"a branch element of page {pgid} points past its page")
            if bytes(page[start:start + elements[3 * n + 1]]) > key:
                break
            first = n
        return first

    def _pages_together(self, pgid: int, upcoming: list[int]) -> int:
        """How many pages from ``pgid`` on to read at once: through the walk's next pages
        (``upcoming``, the nearest last) while each starts at most ``_MOST_SKIPPED`` pages after
        the one before it (room for that one's overflow pages), within the tree and ``_RUN_BYTES``."""
        most = min(_RUN_BYTES // self.page_size, self.meta.high_water - pgid)
        last = pgid
        for following in reversed(upcoming):
            if not last < following <= last + 1 + _MOST_SKIPPED or following - pgid >= most:
                break
            last = following
        return last + 1 - pgid

    def inline_leaf(self, page: bytes) -> LeafInMemory:
        if len(page) < PAGE_HEADER_SIZE:
            raise self.corrupted("an inline bucket is shorter than a page header")
        _id, flags, count, _overflow = PAGE_HEADER.unpack_from(page, 0)
        if flags != LEAF_PAGE:
            raise self.corrupted(f"an inline bucket holds a page of type {flags:#x}")
        if PAGE_HEADER_SIZE + count * ELEMENT_SIZE > len(page):
            raise self.corrupted("an inline bucket claims more elements than it holds")
        return page, 0, len(page), count

    def leaf_elements(self, leaf: Leaf) -> Iterator[tuple[int, int, int, int]]:
        """(flags, key start, key end, value end) of each element; the value starts at key end."""
        buf, offset, end, count = leaf
        element = offset + PAGE_HEADER_SIZE
        for flags, pos, ksize, vsize in LEAF_ELEMENT.iter_unpack(
            buf[element : element + count * ELEMENT_SIZE]
        ):
            kstart = element + pos
            kend = kstart + ksize
            vend = kend + vsize
            if vend > end:
                raise self.corrupted(f"a leaf element at byte {element} points past its page")
            yield flags, kstart, kend, vend
            element += ELEMENT_SIZE

    # -- buckets ----------------------------------------------------------------------------

    def bucket_ref(self, buf: Buffer, start: int, end: int) -> BucketRef:
        if end - start < BUCKET_HEADER.size:
            raise self.corrupted("a bucket header is shorter than 16 bytes")
        root, _sequence = BUCKET_HEADER.unpack(buf[start : start + BUCKET_HEADER.size])
        if root == 0:
            return BucketRef(0, bytes(buf[start + BUCKET_HEADER.size : end]))
        return BucketRef(root)

    def items(
        self, bucket: BucketRef, seen: bytearray
    ) -> Iterator[tuple[bytes, bytes | None, Buffer, int, int]]:
        """Each (key, value, buffer, value start, value end) in key order; value None for a bucket."""
        for leaf in self.leaves(bucket, seen):
            buf = leaf[0]
            for flags, kstart, kend, vend in self.leaf_elements(leaf):
                value = None if flags & BUCKET_LEAF_FLAG else bytes(buf[kend:vend])
                yield bytes(buf[kstart:kend]), value, buf, kend, vend

    def top_level(self, seen: bytearray) -> Iterator[tuple[bytes, BucketRef]]:
        """The top-level buckets (etcd's ``key``, ``meta``, ...) in name order."""
        previous: bytes | None = None
        for name, value, buf, vstart, vend in self.items(BucketRef(self.meta.root), seen):
            if value is not None:
                raise self.corrupted(f"top-level key {name!r} is not a bucket")
            # bbolt finds a bucket by binary search, so a name out of order is unreachable.
            if previous is not None and name <= previous:
                raise self.corrupted(f"top-level bucket {name!r} is out of order")
            previous = name
            yield name, self.bucket_ref(buf, vstart, vend)

    def bucket(self, name: bytes) -> BucketRef | None:
        for found, ref in self.top_level(self.new_seen()):
            if found == name:
                return ref
        return None

    def new_seen(self) -> bytearray:
        return bytearray(self.meta.high_water)

    # -- consistency (bbolt Tx.Check) -------------------------------------------------------

    def mark_nested(self, bucket: BucketRef, seen: bytearray) -> None:
        """Visit every page of ``bucket`` and of the buckets nested in it."""
        pending = [bucket]
        while pending:
            current = pending.pop()
            for leaf in self.leaves(current, seen):
                buf = leaf[0]
                for flags, _kstart, kend, vend in self.leaf_elements(leaf):
                    if flags & BUCKET_LEAF_FLAG:
                        pending.append(self.bucket_ref(buf, kend, vend))

    def freed_pages(self, seen: bytearray) -> bytearray | None:
        """The freelist as a page bitmap (its own pages marked in ``seen``), or None if not stored."""
        pgid = self.meta.freelist
        if pgid == NO_FREELIST:
            return None
        if not 2 <= pgid < self.meta.high_water:
            raise self.corrupted(f"the freelist page {pgid} is outside the database")
        offset = pgid * self.page_size
        _id, flags, count, overflow = self.mm.unpack_from(PAGE_HEADER, offset)
        if not flags & FREELIST_PAGE or pgid + overflow >= self.meta.high_water:
            raise self.corrupted(f"page {pgid} is not the freelist the meta page names")
        seen[pgid : pgid + overflow + 1] = b"\x01" * (overflow + 1)
        start = offset + PAGE_HEADER_SIZE
        if count == FREELIST_COUNT_OVERFLOW:
            (count,) = self.mm.unpack_from(struct.Struct("<Q"), start)
            start += 8
        if start + 8 * count > offset + (overflow + 1) * self.page_size:
            raise self.corrupted(f"the freelist page {pgid} claims more ids than fit in it")
        freed = bytearray(self.meta.high_water)
        for free_id in self.mm.unpack_from(struct.Struct(f"<{count}Q"), start):
            if not 2 <= free_id < self.meta.high_water or freed[free_id]:
                raise self.corrupted(f"the freelist holds a bad or repeated page id {free_id}")
            freed[free_id] = 1
        return freed

    def check_accounting(self, seen: bytearray, freed: bytearray | None) -> None:
        """Every page below the high-water mark is reachable or free, never both."""
        seen[0:2] = b"\x01\x01"
        if freed is None:
            return
        reached = int.from_bytes(seen, "little")
        free = int.from_bytes(freed, "little")
        if reached & free:
            first = (reached & free).bit_length() - 1
            raise self.corrupted(f"page {first // 8} is both in use and on the freelist")
        everything = int.from_bytes(b"\x01" * len(seen), "little")
        missing = everything & ~(reached | free)
        if missing:
            raise self.corrupted(f"page {(missing.bit_length() - 1) // 8} is neither in use nor free")

    def check(self) -> None:
        """Walk every page of every bucket and the freelist, like bbolt's ``Tx.Check``."""
        seen = self.new_seen()
        freed = self.freed_pages(seen)
        self.mark_nested(BucketRef(self.meta.root), seen)
        self.check_accounting(seen, freed)
