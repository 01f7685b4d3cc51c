"""The structural check of a db or snapshot file: what ``lifeboat snapshot check`` reports.

It goes further than bbolt's ``Tx.Check`` (tx.go), which only accounts for pages: every
page below the high-water mark is reachable exactly once or free (never both, never
overlapping another page's overflow), every bucket (nested ones too) can be walked, keys
are strictly ascending within each leaf and lie between the branch keys that lead to them
(a key out of place is one a lookup never finds), and the sha256 trailer matches when the
file has one. When the meta records no freelist (etcd's ``NoFreelistSync``), the
unreachable pages are the free ones, as bbolt itself rebuilds them on open.
"""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lifeboat.errors import LifeboatError, SnapshotFormatError

from .bbolt import BUCKET_LEAF_FLAG, ELEMENT_SIZE, LEAF_PAGE, PAGE_HEADER_SIZE, BoltFile, BucketRef, Leaf
from .trailer import check_trailer, has_trailer_length

_MAX_PROBLEMS = 50
_BUCKET_BIT = bytes(1 if byte & BUCKET_LEAF_FLAG else 0 for byte in range(256))
_layouts: dict[int, struct.Struct] = {}


@dataclass(frozen=True)
class SnapshotCheck:
    """The verdict on one file; ``problems`` is empty when it is sound."""

    path: str
    problems: tuple[str, ...]
    page_size: int | None = None
    high_water: int | None = None
    txid: int | None = None
    pages_in_use: int = 0
    pages_free: int = 0
    freelist: str = "none"
    buckets: int = 0
    nested_buckets: int = 0
    keys: int = 0
    trailer: str = "absent"

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "problems": list(self.problems), "ok": self.ok}

    def require_ok(self) -> None:
        """Raise :class:`SnapshotFormatError` naming the first problem, unless sound."""
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise SnapshotFormatError(
                f"{self.path}: fails the structural check: {self.problems[0]}{more}"
            )


@dataclass
class _Walk:
    db: BoltFile
    seen: bytearray
    problems: list[str] = field(default_factory=list)
    nested: int = 0
    keys: int = 0
    reread_from: int = 0  # leaves below this page id are accounted for, their keys not re-read

    def problem(self, text: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)

    def bucket(self, name: str, ref: BucketRef) -> None:
        """Walk one bucket and those nested in it, recording what is wrong instead of stopping."""
        try:
            self._tree(name, ref)
        except LifeboatError as exc:
            self.problem(f"bucket {name}: {_reason(exc, self.db)}")

    def _tree(self, name: str, ref: BucketRef) -> None:
        # (page id or None for the inline page, lowest allowed key, first key not allowed)
        start = None if ref.inline is not None else ref.root
        stack: list[tuple[int | None, bytes | None, bytes | None]] = [(start, None, None)]
        previous: bytes | None = None
        while stack:
            pgid, low, high = stack.pop()
            if pgid is None:
                assert ref.inline is not None
                leaf: Leaf = self.db.inline_leaf(ref.inline)
            else:
                known = pgid < self.reread_from
                if known and 2 <= pgid and (pgid + 1) * self.db.page_size <= len(self.db.mm):
                    # One read of the page's first 4 KiB serves its header and element table.
                    self.db.mm.read(pgid * self.db.page_size, self.db.page_size)
                offset, end, flags, count = self.db.tree_page(pgid, self.seen, read_leaf=not known)
                if flags == LEAF_PAGE and known:
                    if not self._holds_buckets(offset, count):
                        self.keys += count
                        previous = None  # the next leaf is checked against its branch keys only
                        continue
                    self.db.mm.read(offset, end - offset)  # a nested bucket is walked as always
                if flags != LEAF_PAGE:
                    entries = self.db.branch_entries(pgid, offset, count)
                    children = []
                    for i, (key, child) in enumerate(entries):
                        if i and key <= entries[i - 1][0]:
                            self.problem(f"bucket {name}: branch page {pgid} keys out of order")
                        upper = entries[i + 1][0] if i + 1 < len(entries) else high
                        children.append((child, key if i else low, upper))
                    stack.extend(reversed(children))
                    continue
                leaf = (self.db.mm, offset, end, count)
            fast = _plain_leaf_keys(leaf)
            if fast is not None and (previous is None or fast[0] > previous) and (
                    (low is None or fast[0] >= low) and (high is None or fast[-1] < high)):
                previous = fast[-1]
                self.keys += len(fast)
                continue
            buf = leaf[0]
            for flags, kstart, kend, vend in self.db.leaf_elements(leaf):
                key = bytes(buf[kstart:kend])
                if previous is not None and key <= previous:
                    self.problem(f"bucket {name}: key {key!r:.60} is not after {previous!r:.60}")
                elif (low is not None and key < low) or (high is not None and key >= high):
                    where = f"page {pgid}" if pgid is not None else "its inline page"
                    self.problem(f"bucket {name}: key {key!r:.60} in {where} is outside the "
                                 "range its branch keys give it; lookups cannot find it")
                previous = key
                self.keys += 1
                if flags & BUCKET_LEAF_FLAG:
                    self.nested += 1
                    self.bucket(f"{name}/{key!r}", self.db.bucket_ref(buf, kend, vend))


    def _holds_buckets(self, offset: int, count: int) -> bool:
        table = self.db.mm[offset + PAGE_HEADER_SIZE : offset + PAGE_HEADER_SIZE + count * ELEMENT_SIZE]
        # Each element starts with its flags (little-endian): the bucket bit is in its first byte.
        return table[0::ELEMENT_SIZE].translate(_BUCKET_BIT).find(1) != -1


def _plain_leaf_keys(leaf: Leaf) -> list[bytes] | None:
    """The keys of a leaf holding no nested bucket, if they are strictly ascending and every
    element lies inside the page; None otherwise (the element-by-element walk then says why).

    Most leaves are like this; unpacking all elements at once keeps a multi-GB check fast.
    """
    buf, offset, end, count = leaf
    if count == 0:
        return None
    layout = _layouts.get(count)
    if layout is None:
        layout = _layouts[count] = struct.Struct("<" + "IIII" * count)
    fields = layout.unpack(buf[offset + PAGE_HEADER_SIZE : offset + PAGE_HEADER_SIZE + layout.size])
    if any(fields[0::4]):
        return None
    first = offset + PAGE_HEADER_SIZE
    starts = [first + ELEMENT_SIZE * i + pos for i, pos in enumerate(fields[1::4])]
    sizes = fields[2::4]
    if max(map(sum, zip(starts, sizes, fields[3::4]))) > end:
        return None
    keys = [bytes(buf[start : start + size]) for start, size in zip(starts, sizes)]
    if any(later <= earlier for earlier, later in zip(keys, keys[1:])):
        return None
    return keys


def _reason(exc: LifeboatError, db: BoltFile) -> str:
    """The error's text without the file name and advice the reader puts around it."""
    text = str(exc).removeprefix(f"{db.path}: ")
    return text.removesuffix("; the snapshot is corrupted, use another copy")


def check_snapshot(path: str | os.PathLike[str], *, reread_from: int = 0) -> SnapshotCheck:
    """Check ``path`` structurally; every problem found is listed (up to 50).

    ``reread_from``: leaf pages below this page id are still accounted for (overflow, no page
    twice) but their keys are not read, for a db the caller has just read in full and then
    changed only above that page (lifeboat's in-place bump of a restored member's db).
    """
    p = Path(path)
    trailer_state = "absent"
    if p.is_file() and has_trailer_length(p.stat().st_size):
        trailer_state = "matches" if check_trailer(p).matches else "mismatch"
    problems: list[str] = []
    if trailer_state == "mismatch":
        problems.append("the sha256 trailer does not match the database bytes")
    try:
        with BoltFile.open(p) as db:
            return _check_open(db, problems, trailer_state, reread_from)
    except SnapshotFormatError as exc:
        return SnapshotCheck(str(p), tuple(problems + [str(exc).removeprefix(f"{p}: ")]),
                             trailer=trailer_state)


def _check_open(db: BoltFile, problems: list[str], trailer: str, reread_from: int) -> SnapshotCheck:
    seen = db.new_seen()
    walk = _Walk(db, seen, problems, reread_from=reread_from)
    freed = None
    try:
        freed = db.freed_pages(seen)
    except SnapshotFormatError as exc:
        walk.problem(_reason(exc, db))
    top = 0
    try:
        for name, ref in db.top_level(seen):
            top += 1
            walk.bucket(repr(name), ref)
    except SnapshotFormatError as exc:
        walk.problem(f"the root bucket: {_reason(exc, db)}")
    seen[0:2] = b"\x01\x01"
    in_use = seen.count(1)
    if freed is not None:
        try:
            db.check_accounting(seen, freed)
        except SnapshotFormatError as exc:
            walk.problem(_reason(exc, db))
    return SnapshotCheck(
        path=str(db.path),
        problems=tuple(walk.problems),
        page_size=db.page_size,
        high_water=db.meta.high_water,
        txid=db.meta.txid,
        pages_in_use=in_use,
        pages_free=db.meta.high_water - in_use,
        freelist="rebuilt on open" if freed is None else "stored",
        buckets=top,
        nested_buckets=walk.nested,
        keys=walk.keys,
        trailer=trailer,
    )
