"""The numbers ``etcdutl snapshot status`` prints, computed offline.

etcd (etcdutl/snapshot/v3_snapshot.go in 3.5, clientv3/snapshot in 3.4) runs bbolt's
``Tx.Check`` and then, for each top-level bucket in name order, feeds the bucket name and
then every key and value of that bucket (``Bucket.ForEach``: a nested bucket's value counts
as empty) into one CRC-32 Castagnoli. ``revision`` is the main revision of the last key of
bucket ``key``, ``totalKey`` counts every ForEach entry, ``totalSize`` is ``Tx.Size``:
high-water page id times page size.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from operator import sub

import google_crc32c

from .bbolt import (
    BUCKET_LEAF_FLAG,
    ELEMENT_SIZE,
    LEAF_PAGE,
    PAGE_HEADER_SIZE,
    BoltFile,
    BucketRef,
    Leaf,
)
from .page_scan import REVISION_KEYS, SUMMARISED, PageScan, crc_join
from .trailer import check_trailer

_KEY_BUCKET = b"key"
_MAIN_REVISION = struct.Struct(">Q")
_REVISION_KEY = 17
_leaf_layouts: dict[int, struct.Struct] = {}
# Large sequential reads: the page cache hands them over at memory speed, and per-page costs
# (a pread, a bytes object) are paid once per block instead.
_SCAN_BLOCK = 4 << 20
_ONES = re.compile(b"\x01+")
_SEEN = b"\x01" * (1 << 16)  # marks for a page and its overflow (at most 0xFFFF) in ``seen``


@dataclass(frozen=True)
class SnapshotStatus:
    """What a snapshot holds, in ``etcdutl snapshot status`` terms, plus file facts."""

    hash: int
    revision: int
    total_key: int
    total_size: int
    db_size: int
    file_size: int
    has_trailer: bool
    page_size: int
    txid: int

    def to_etcdutl_json(self) -> dict[str, int]:
        """The object ``etcdutl snapshot status -w json`` prints, same keys and order."""
        return {
            "hash": self.hash,
            "revision": self.revision,
            "totalKey": self.total_key,
            "totalSize": self.total_size,
        }

    def etcdutl_json_text(self) -> str:
        """Byte-for-byte what ``etcdutl snapshot status -w json`` writes (no newline)."""
        return json.dumps(self.to_etcdutl_json(), separators=(",", ":"))


def snapshot_status(
    path: str | os.PathLike[str], *, verify_trailer: bool = False, scan: PageScan | None = None
) -> SnapshotStatus:
    """Check the bbolt structure of ``path`` and compute etcdutl's status numbers.

    With ``verify_trailer``, first require the sha256 trailer to be present and to match
    (:class:`IntegrityError` otherwise), which also catches damage inside keys and values
    that no structural check can see. ``scan`` is a :class:`PageScan` already fed every
    byte of ``path`` (as it was written); without one, the file is scanned here first.
    """
    if verify_trailer:
        check_trailer(path).require_match(path)
    with BoltFile.open(path) as db:
        if scan is None:
            scan = _scan_file(db)
        if scan.page_size != db.page_size:
            scan = PageScan()  # fed with other bytes than the meta the reader trusts: not used
        seen = db.new_seen()
        freed = db.freed_pages(seen)
        crc, total_key, revision = 0, 0, 0
        for name, bucket in db.top_level(seen):
            crc = google_crc32c.extend(crc, name)
            crc, count, last_key = _hash_bucket(db, bucket, seen, crc, name == _KEY_BUCKET, scan)
            total_key += count
            if name == _KEY_BUCKET and last_key is not None:
                revision = _main_revision(db, last_key)
        db.check_accounting(seen, freed)
        return SnapshotStatus(
            hash=crc,
            revision=revision,
            total_key=total_key,
            total_size=db.meta.tx_size,
            db_size=db.db_size,
            file_size=db.file_size,
            has_trailer=db.has_trailer,
            page_size=db.page_size,
            txid=db.meta.txid,
        )


def _main_revision(db: BoltFile, key: bytes) -> int:
    if len(key) < 8:
        raise db.corrupted(f"a key in bucket 'key' is {len(key)} bytes, too short for a revision")
    main: int = _MAIN_REVISION.unpack_from(key)[0]
    # etcd reads it as a signed int64.
    return main - (1 << 64) if main >= 1 << 63 else main


def _scan_file(db: BoltFile) -> PageScan:
    scan = PageScan()
    for offset in range(0, db.db_size, _SCAN_BLOCK):
        scan.feed(db.mm.read(offset, min(_SCAN_BLOCK, db.db_size - offset)))
    return scan


def _hash_bucket(
    db: BoltFile, bucket: BucketRef, seen: bytearray, crc: int, revision_keys: bool, scan: PageScan
) -> tuple[int, int, bytes | None]:
    """Extend ``crc`` with every key and value of ``bucket``: (crc, entries, last key).

    With ``revision_keys`` every key must have the length of an etcd revision (17, or 18
    with the tombstone mark); etcdutl decodes each one and crashes on a short key. Leaf
    pages the scan summarised are checked like :meth:`BoltFile.tree_page` checks a page
    and contribute their CRC without being read again.
    """
    count = 0
    last_key: bytes | None = None
    last_summarised: int | None = None  # the last leaf, when the scan summarised it
    nested: list[BucketRef] = []
    if bucket.inline is not None:
        stack: list[int | tuple[int, int]] = []
        leaf: Leaf | None = db.inline_leaf(bucket.inline)
    else:
        stack, leaf = [bucket.root], None
    high_water, summarised = db.meta.high_water, len(scan.state)
    states, chain, lengths, counts, overflows = scan.state, scan.chain, scan.length, scan.count, scan.overflow
    while leaf is not None or stack:
        if leaf is None:
            item = stack.pop()
            if isinstance(item, tuple):
                # Leaves the scan summarised at consecutive page ids: one CRC join for all.
                first, last = item
                crc = crc_join(crc, chain[first - 1], chain[last], sum(lengths[first : last + 1]))
                count += sum(counts[first : last + 1])
                last_summarised = last
                continue
            pgid = item
            if 2 <= pgid < summarised and states[pgid]:
                last = pgid + overflows[pgid]
                if last >= high_water:
                    raise db.corrupted(f"page {pgid} overflows past the end of the database")
                if seen.find(1, pgid, last + 1) != -1:
                    raise db.corrupted(f"page {pgid} is referenced more than once")
                seen[pgid : last + 1] = _SEEN[: last + 1 - pgid]
                entries = counts[pgid]
                if entries:
                    if revision_keys and not states[pgid] & REVISION_KEYS:
                        _require_revision_keys(db, *_key_size_range(db, pgid))
                    crc = crc_join(crc, chain[pgid - 1], chain[pgid], lengths[pgid])
                    count += entries
                    last_summarised = pgid
                continue
            offset, end, flags, entries = db.tree_page(pgid, seen)
            if flags != LEAF_PAGE:
                children = db.branch_children(pgid, offset, entries)
                stack.extend(reversed(_runs(children, scan, seen, high_water, revision_keys)))
                continue
            leaf = (db.mm, offset, end, entries)
        if leaf[3]:
            crc, last_key, shortest, longest = _hash_leaf(db, leaf, crc, nested)
            if revision_keys:
                _require_revision_keys(db, shortest, longest)
            count += leaf[3]
            last_summarised = None
        leaf = None
    for child in nested:
        db.mark_nested(child, seen)
    if last_summarised is not None:
        offset, end, _flags, entries = db.tree_page(last_summarised, db.new_seen())
        last_key = db.leaf_items((db.mm, offset, end, entries))[-1][1]
    return crc, count, last_key


def _runs(
    children: list[int], scan: PageScan, seen: bytearray, high_water: int, revision_keys: bool
) -> list[int | tuple[int, int]]:
    """A branch page's children, in key order, with runs of summarised leaves as (first, last).

    A run is at least two leaves at consecutive page ids, every one summarised, with
    elements, without overflow pages, below the high-water mark, not seen before (then marked
    seen), and with revision keys where ``revision_keys``: exactly what the walk checks page by
    page. Children that fail any of that stay single, for the walk to check (and name) one by one.
    """
    items: list[int | tuple[int, int]] = []
    states, counts, overflows, summarised = scan.state, scan.count, scan.overflow, len(scan.state)
    # Byte i is 1 where child i + 1 has the id after child i's: each run of ones is a stretch.
    follows = bytes(map((1).__eq__, map(sub, children[1:], children[:-1])))
    done = 0
    for match in _ONES.finditer(follows):
        first_at, last_at = match.start(), match.end()
        first, last = children[first_at], children[last_at]
        size = last_at + 1 - first_at
        items.extend(children[done:first_at])
        done = last_at + 1
        whole = (
            2 <= first and last < min(summarised, high_water)
            and states.count(0, first, last + 1) == 0
            and (not revision_keys or states.count(SUMMARISED | REVISION_KEYS, first, last + 1) == size)
            and counts[first : last + 1].count(0) == 0
            and overflows[first : last + 1].count(0) == size
            and seen.find(1, first, last + 1) == -1
        )
        if whole:
            seen[first : last + 1] = b"\x01" * size
            items.append((first, last))
        else:
            items.extend(children[first_at:done])
    items.extend(children[done:])
    return items


def _require_revision_keys(db: BoltFile, shortest: int, longest: int) -> None:
    if shortest < _REVISION_KEY or longest > _REVISION_KEY + 1:
        raise db.corrupted(f"bucket 'key' holds a {shortest}-byte key, not an etcd revision")


def _key_size_range(db: BoltFile, pgid: int) -> tuple[int, int]:
    """(shortest, longest) key of leaf page ``pgid``."""
    offset, end, _flags, entries = db.tree_page(pgid, db.new_seen())
    sizes = [kend - kstart for _f, kstart, kend, _v in db.leaf_elements((db.mm, offset, end, entries))]
    return min(sizes), max(sizes)


def _hash_leaf(
    db: BoltFile, leaf: Leaf, crc: int, nested: list[BucketRef]
) -> tuple[int, bytes, int, int]:
    """Hash one non-empty leaf page; (crc, its last key, shortest and longest key size)."""
    buf, offset, end, count = leaf
    layout = _leaf_layouts.get(count)
    if layout is None:
        layout = _leaf_layouts[count] = struct.Struct("<" + "IIII" * count)
    fields = layout.unpack(buf[offset + PAGE_HEADER_SIZE : offset + PAGE_HEADER_SIZE + layout.size])
    # bbolt writes keys and values back to back, in element order, right after the element
    # array (node.go write): then the whole page's data is one run for the CRC.
    element = offset + PAGE_HEADER_SIZE
    data = cursor = element + count * ELEMENT_SIZE
    contiguous = not any(fields[0::4])
    if contiguous:
        for pos, ksize, vsize in zip(fields[1::4], fields[2::4], fields[3::4]):
            if element + pos != cursor:
                contiguous = False
                break
            cursor += ksize + vsize
            element += ELEMENT_SIZE
    key_sizes = fields[2::4]
    shortest, longest = min(key_sizes), max(key_sizes)
    if contiguous and cursor <= end:
        kstart = cursor - fields[-1] - fields[-2]
        last_key = bytes(buf[kstart : kstart + fields[-2]])
        return google_crc32c.extend(crc, buf[data:cursor]), last_key, shortest, longest
    kstart = kend = 0
    for flags, kstart, kend, vend in db.leaf_elements(leaf):
        crc = google_crc32c.extend(crc, buf[kstart:kend])
        if flags & BUCKET_LEAF_FLAG:
            nested.append(db.bucket_ref(buf, kend, vend))
        else:
            crc = google_crc32c.extend(crc, buf[kend:vend])
    return crc, bytes(buf[kstart:kend]), shortest, longest
