"""Copy-on-write of bbolt B+trees: new pages for what changed, old pages referenced in place.

A changed bucket is rewritten along the paths that lead to changed keys only: an untouched
subtree keeps its page id, a touched leaf is re-packed (and may split into several pages or
vanish), and every branch on the way up gets a new page. Rows appended past a bucket's last
key are streamed into leaves at the right edge; each finished page is written at once and
only one page of entries per tree level stays in memory.

Facts from bbolt v1.3.6 (node.go, cursor.go, page.go): a leaf element is (flags, key
position, key size, value size) and a branch element (key position, key size, child id),
16 bytes each, followed by the keys and values back to back; a position counts from the
element's own address. A branch element's key is the first key of its child, and a cursor
descends into the last child whose key is <= the key sought (the first child for anything
smaller). Trees stay balanced: every leaf is at the same depth.
"""

from __future__ import annotations

import io
import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from lifeboat.errors import UsageError

from .bbolt import (
    BRANCH_PAGE,
    BUCKET_LEAF_FLAG,
    ELEMENT_SIZE,
    LEAF_PAGE,
    PAGE_HEADER,
    PAGE_HEADER_SIZE,
    BoltFile,
)

# (element flags, key, value) of a leaf element.
Item = tuple[int, bytes, bytes]
# (key, value) of an appended row: never a nested bucket.
Row = tuple[bytes, bytes]
_FLUSH_BYTES = 8 << 20
# bbolt refuses empty keys and keys longer than this (bucket.go MaxKeySize).
MAX_KEY_SIZE = 32768
_layouts: dict[int, struct.Struct] = {}


def _u32s(count: int) -> struct.Struct:
    layout = _layouts.get(count)
    if layout is None:
        layout = _layouts[count] = struct.Struct(f"<{count}I")
    return layout


class PageSink:
    """Allocates page ids from the high-water mark up and writes each page there, in order.

    Pages are gathered in one buffer written out every 8 MiB and then written over from its
    start (never freed and grown again: 2,048 fresh pages to fault each time); every page is
    written whole, padding included, so nothing of an earlier page stays in one.
    """

    def __init__(self, out: BinaryIO, page_size: int, first_pgid: int) -> None:
        self.out = out
        self.page_size = page_size
        self.next_pgid = first_pgid
        self.pages_written = 0
        self._pending = io.BytesIO()
        self._zeros = memoryview(bytes(page_size))
        out.seek(first_pgid * page_size)

    def write(self, flags: int, count: int, body: bytes) -> int:
        """Write one page (with overflow pages if ``body`` needs them); its page id."""
        return self.write_parts(flags, count, body, [])

    def write_parts(self, flags: int, count: int, elements: bytes, parts: list[bytes]) -> int:
        """:meth:`write` of a page whose body is ``elements`` followed by ``parts``, not joined first."""
        size = PAGE_HEADER_SIZE + len(elements) + sum(map(len, parts))
        pages = -(-size // self.page_size)
        pgid = self.next_pgid
        put = self._pending.write
        put(PAGE_HEADER.pack(pgid, flags, count, pages - 1))
        put(elements)
        for part in parts:
            put(part)
        put(self._zeros[:pages * self.page_size - size])  # under a page
        self.next_pgid += pages
        self.pages_written += pages
        if self._pending.tell() >= _FLUSH_BYTES:
            self.flush()
        return pgid

    def flush(self) -> None:
        pending = self._pending
        with pending.getbuffer() as gathered, gathered[:pending.tell()] as pages:
            self.out.write(pages)
        pending.seek(0)


class BranchLevel:
    """Branch pages of one tree level, written left to right as they fill.

    A finished page's (first key, id) goes to ``parent``. The top level (no parent given)
    grows a new level above itself when it fills a page, so the tree's height follows the
    number of rows and memory stays at one page per level.
    """

    def __init__(self, sink: PageSink, parent: BranchLevel | None = None) -> None:
        self.sink = sink
        self.parent = parent
        self.is_top = parent is None
        self.keys: list[bytes] = []
        self.children: list[int] = []
        self.size = PAGE_HEADER_SIZE

    def add(self, key: bytes, child: int) -> None:
        grow = ELEMENT_SIZE + len(key)
        if self.size + grow > self.sink.page_size and self.keys:
            self._flush()
        self.keys.append(key)
        self.children.append(child)
        self.size += grow

    def _flush(self) -> None:
        count = len(self.keys)
        fields: list[int] = []
        pos = count * ELEMENT_SIZE
        for key, child in zip(self.keys, self.children):
            fields += (pos, len(key), child & 0xFFFFFFFF, child >> 32)
            pos += len(key) - ELEMENT_SIZE
        body = _u32s(4 * count).pack(*fields) + b"".join(self.keys)
        pgid = self.sink.write(BRANCH_PAGE, count, body)
        if self.parent is None:
            self.parent = BranchLevel(self.sink)
        self.parent.add(self.keys[0], pgid)
        self.keys, self.children, self.size = [], [], PAGE_HEADER_SIZE

    def finish(self) -> None:
        """Write the last, partly filled page of a level below the top."""
        if self.keys:
            self._flush()

    def finish_root(self) -> int | None:
        """Close the top level and every level it grew: the root's page id (None if empty)."""
        if self.parent is None:
            if len(self.keys) <= 1:
                return self.children[0] if self.children else None
            self._flush()
        elif self.keys:
            self._flush()
        assert self.parent is not None
        return self.parent.finish_root()


class LeafPacker:
    """Leaf pages filled up to the page size, written as they fill; each goes to ``parent``."""

    def __init__(self, sink: PageSink, parent: BranchLevel) -> None:
        self.sink = sink
        self.parent = parent
        self.limit = sink.page_size
        self.flags: list[int] = []
        self.parts: list[bytes] = []
        self.size = PAGE_HEADER_SIZE

    def add(self, flags: int, key: bytes, value: bytes) -> None:
        grow = ELEMENT_SIZE + len(key) + len(value)
        if self.size + grow > self.limit and self.flags:
            self.flush()
        self.flags.append(flags)
        self.parts.append(key)
        self.parts.append(value)
        self.size += grow

    def flush(self) -> None:
        count = len(self.flags)
        if not count:
            return
        parts = self.parts
        sizes = list(map(len, parts))
        fields: list[int] = []
        pos = count * ELEMENT_SIZE
        for i, flags in enumerate(self.flags):
            ksize, vsize = sizes[2 * i], sizes[2 * i + 1]
            fields += (flags, pos, ksize, vsize)
            pos += ksize + vsize - ELEMENT_SIZE
        pgid = self.sink.write_parts(LEAF_PAGE, count, _u32s(4 * count).pack(*fields), parts)
        self.parent.add(parts[0], pgid)
        self.flags, self.parts, self.size = [], [], PAGE_HEADER_SIZE

    def append_rows(self, rows: Iterable[Row], previous: bytes | None, where: str) -> None:
        """Add ``rows`` (plain keys, strictly ascending, each above ``previous``) at the end.

        :meth:`add` inlined for the replay's hundreds of thousands of rows."""
        limit = self.limit
        flags, parts, size = self.flags, self.parts, self.size
        last = b"" if previous is None else previous  # every key is non-empty, so above b""
        for key, value in rows:
            key_size = len(key)
            if not 0 < key_size <= MAX_KEY_SIZE:
                raise UsageError(f"{where}: appended key {key!r:.80} is empty or too long")
            if key <= last:
                raise UsageError(
                    f"{where}: appended key {key!r:.80} is not greater than {last!r:.80}; "
                    "appends must be strictly ascending and after every key in the bucket"
                )
            grow = ELEMENT_SIZE + key_size + len(value)
            if size + grow > limit and flags:
                self.flush()
                flags, parts, size = self.flags, self.parts, PAGE_HEADER_SIZE
            flags.append(0)
            parts.append(key)
            parts.append(value)
            size += grow
            last = key
        self.size = size


@dataclass(frozen=True)
class Edits:
    """Point changes to one tree: key -> new element, or None to remove the key if present."""

    keys: list[bytes]
    elements: dict[bytes, Item | None]

    @classmethod
    def of(cls, elements: dict[bytes, Item | None]) -> Edits:
        return cls(sorted(elements), elements)


class TreeRewrite:
    """Rewrites trees of ``db`` into ``sink``: the changed paths only, appends at the right edge."""

    def __init__(self, db: BoltFile, sink: PageSink, where: str) -> None:
        self.db = db
        self.sink = sink
        self.where = where
        self.seen = db.new_seen()

    def tree(self, root: int, edits: Edits, appends: Iterable[Row] | None) -> int:
        """Rewrite the tree at page ``root``; the new root's page id."""
        top = BranchLevel(self.sink)
        self._node(root, edits, 0, len(edits.keys), appends, top)
        return self._root(top)

    def items(self, items: list[Item], edits: Edits, appends: Iterable[Row] | None) -> int:
        """Write a new tree holding ``items`` (an inline bucket's) with the changes applied."""
        top = BranchLevel(self.sink)
        self._leaf(items, edits, 0, len(edits.keys), appends, top)
        return self._root(top)

    def _root(self, top: BranchLevel) -> int:
        root = top.finish_root()
        if root is None:
            # Every key was removed: bbolt keeps an empty bucket as one empty leaf.
            root = self.sink.write(LEAF_PAGE, 0, b"")
        return root

    def _node(self, pgid: int, edits: Edits, lo: int, hi: int, appends: Iterable[Row] | None,
              parent: BranchLevel) -> None:
        offset, end, flags, count = self.db.tree_page(pgid, self.seen)
        if flags != BRANCH_PAGE:
            items = self.db.leaf_items((self.db.mm, offset, end, count))
            self._leaf(items, edits, lo, hi, appends, parent)
            return
        level = BranchLevel(self.sink, parent)
        children = self.db.branch_entries(pgid, offset, count)
        start = lo
        for i, (key, child) in enumerate(children):
            last = i == len(children) - 1
            stop = hi if last else bisect_left(edits.keys, children[i + 1][0], start, hi)
            if start == stop and not (last and appends is not None):
                level.add(key, child)
            else:
                self._node(child, edits, start, stop, appends if last else None, level)
            start = stop
        level.finish()

    def _leaf(self, items: list[Item], edits: Edits, lo: int, hi: int, appends: Iterable[Row] | None,
              parent: BranchLevel) -> None:
        packer = LeafPacker(self.sink, parent)
        greatest = items[-1][1] if items else None
        for flags, key, value in self._merged(items, edits, lo, hi):
            packer.add(flags, key, value)
            greatest = key if greatest is None or key > greatest else greatest
        if appends is not None:
            self._append(packer, appends, greatest)
        packer.flush()

    def _merged(self, items: list[Item], edits: Edits, lo: int, hi: int) -> Iterator[Item]:
        """The leaf's elements with the edits in ``edits.keys[lo:hi]`` applied, in key order."""
        keys = edits.keys
        i = lo
        for item in items:
            key = item[1]
            while i < hi and keys[i] < key:
                put = edits.elements[keys[i]]
                if put is not None:
                    yield put
                i += 1
            if i < hi and keys[i] == key:
                self._check_replaceable(item, edits.elements[key])
                put = edits.elements[key]
                if put is not None:
                    yield put
                i += 1
            else:
                yield item
        for key in keys[i:hi]:
            put = edits.elements[key]
            if put is not None:
                yield put

    def _check_replaceable(self, old: Item, new: Item | None) -> None:
        # bbolt refuses to put or delete a plain key over a nested bucket (ErrIncompatibleValue).
        if old[0] & BUCKET_LEAF_FLAG and (new is None or not new[0] & BUCKET_LEAF_FLAG):
            raise UsageError(
                f"{self.where}: key {old[1]!r} is a nested bucket; it cannot be replaced or "
                "deleted as a row"
            )

    def _append(self, packer: LeafPacker, appends: Iterable[Row], greatest: bytes | None) -> None:
        packer.append_rows(appends, greatest, self.where)
