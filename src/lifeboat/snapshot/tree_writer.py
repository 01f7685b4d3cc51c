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
import os
import struct
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from operator import add
from dataclasses import dataclass
from typing import BinaryIO

from lifeboat.errors import UsageError
from lifeboat.waits import finished

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
# Pages gathered before they are handed to the writing thread; with the pages it is writing,
# at most twice this is held.
_FLUSH_BYTES = 4 << 20
# bbolt refuses empty keys and keys longer than this (bucket.go MaxKeySize).
MAX_KEY_SIZE = 32768
# A page's header and its elements are packed at once, with one layout per element count: a
# leaf element is four u32 (flags, key position, key size, value size), a branch element two u32
# and a u64 (key position, key size, child id). A key's position counts from its own element, so
# it is (count - i) * 16 plus the bytes of keys and values before it: a packer notes each
# element's position less 16 * count as it adds it, and the layout's offsets add 16 * count.
_leaf_layouts: dict[int, tuple[struct.Struct, tuple[int, ...]]] = {}
_branch_layouts: dict[int, tuple[struct.Struct, tuple[int, ...]]] = {}


def _leaf_layout(count: int) -> tuple[struct.Struct, tuple[int, ...]]:
    layout = _leaf_layouts.get(count)
    if layout is None:
        layout = _leaf_layouts[count] = (struct.Struct(f"{PAGE_HEADER.format}{4 * count}I"),
                                         (0, count * ELEMENT_SIZE, 0, 0) * count)
    return layout


def _branch_layout(count: int) -> tuple[struct.Struct, tuple[int, ...]]:
    layout = _branch_layouts.get(count)
    if layout is None:
        layout = _branch_layouts[count] = (struct.Struct(PAGE_HEADER.format + "IIQ" * count),
                                           (count * ELEMENT_SIZE, 0, 0) * count)
    return layout


class PageSink:
    """Allocates page ids from the high-water mark up and writes each page there, in order.

    A page is gathered as the parts it is made of (its packed header and elements, the keys
    and values as the caller holds them, its padding), not copied into one buffer: every
    4 MiB the parts are written with ``pwritev`` (the kernel copies them into the file's pages
    once) by a thread, while the next pages are gathered (the copy into fresh page cache is
    about as long as gathering the pages; pwritev releases the GIL), or written one by one
    when ``out`` is not a file. Every page is written whole, padding included, so nothing of an
    earlier write stays in one. :meth:`flush` returns once every page is written; use the sink
    in a ``with`` block so that no write outlives it after an error.
    """

    def __init__(self, out: BinaryIO, page_size: int, first_pgid: int) -> None:
        self.out = out
        self.page_size = page_size
        self.next_pgid = first_pgid
        self.pages_written = 0
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._written_to = first_pgid * page_size  # where the pending parts go
        self._zeros = memoryview(bytes(page_size))
        self._writing: Future[None] | None = None
        out.seek(first_pgid * page_size)
        try:
            self._fd: int | None = out.fileno()
        except (AttributeError, io.UnsupportedOperation):
            self._fd = None

    def write(self, flags: int, count: int, body: bytes) -> int:
        """Write one page (with overflow pages if ``body`` needs them); its page id."""
        return self.write_parts(flags, count, body, [])

    def write_parts(self, flags: int, count: int, elements: bytes, parts: list[bytes]) -> int:
        """:meth:`write` of a page whose body is ``elements`` followed by ``parts``, not joined first."""
        return self.write_page(PAGE_HEADER, (), flags, count, [b"", elements, *parts],
                               PAGE_HEADER_SIZE + len(elements) + sum(map(len, parts)))

    def write_page(self, layout: struct.Struct, fields: Iterable[int], flags: int, count: int,
                   parts: list[bytes], size: int) -> int:
        """Write one page of ``size`` bytes: its header and ``fields`` packed with ``layout``,
        then ``parts[1:]`` (kept, not copied, until written); its page id. ``parts[0]`` is a
        slot for the packed header (overwritten)."""
        page_size = self.page_size
        pages = -(-size // page_size)
        pgid = self.next_pgid
        parts[0] = layout.pack(pgid, flags, count, pages - 1, *fields)
        pending = self._pending
        pending += parts
        pending.append(self._zeros[:pages * page_size - size])  # under a page
        self.next_pgid = pgid + pages
        self.pages_written += pages
        self._pending_bytes += pages * page_size
        if self._pending_bytes >= _FLUSH_BYTES:
            self._write_behind()
        return pgid

    def __enter__(self) -> PageSink:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, _tb: object) -> None:
        """Wait for the write in flight, if any: none outlives the sink (its file may be closed
        next, and the descriptor reused). After an error in the block that error is raised, not
        the write's."""
        if exc is None:
            self._written()
            return
        writing, self._writing = self._writing, None
        if writing is not None:
            try:
                finished(writing)
            except Exception:  # the block's own error is on its way out
                pass

    def flush(self) -> None:
        """Write every page given so far; an error of any write is raised here."""
        self._write_behind()
        self._written()

    def _write_behind(self) -> None:
        """Start writing the pending pages in a thread, once the write before is done."""
        pending, at = self._pending, self._written_to
        self._written_to += self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        fd = self._fd
        if fd is None:
            for part in pending:
                self.out.write(part)
            return
        self._written()
        self.out.flush()
        writing: Future[None] = Future()

        def write() -> None:
            try:
                _write_all_at(fd, pending, at)
            except BaseException as exc:  # raised in the gathering thread by _written()
                writing.set_exception(exc)
            else:
                writing.set_result(None)

        # A daemon: a write abandoned by a failed commit is of pages no meta page names yet.
        threading.Thread(target=write, name="lifeboat-page-write", daemon=True).start()
        self._writing = writing

    def _written(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            finished(writing)


# The most buffers one pwritev takes (Linux's IOV_MAX).
_IOV_MAX = 1024


def _write_all_at(fd: int, parts: list[bytes | memoryview], offset: int) -> None:
    """Write ``parts`` one after another at ``offset`` of ``fd``, however many calls that takes."""
    for at in range(0, len(parts), _IOV_MAX):
        batch = parts[at:at + _IOV_MAX]
        done = os.pwritev(fd, batch, offset)
        size = sum(map(len, batch))
        if done < size:  # a short write (a signal, a full disk): the rest one buffer at a time
            rest = memoryview(b"".join(batch))[done:]
            while rest:
                wrote = os.pwrite(fd, rest, offset + done)
                rest, done = rest[wrote:], done + wrote
        offset += size


class BranchLevel:
    """Branch pages of one tree level, written left to right as they fill.

    A finished page's (first key, id) goes to ``parent``. The top level (no parent given)
    grows a new level above itself when it fills a page, so the tree's height follows the
    number of rows and memory stays at one page per level.
    """

    def __init__(self, sink: PageSink, parent: BranchLevel | None = None) -> None:
        self.sink = sink
        self.parent = parent
        self._start()

    def _start(self) -> None:
        self.parts: list[bytes] = [b""]  # a slot for the page's header, then its keys
        self.fields: list[int] = []  # per element: key position less 16 * count, key size, child
        self.size = PAGE_HEADER_SIZE
        self.position = 0

    def add(self, key: bytes, child: int) -> None:
        key_size = len(key)
        grow = ELEMENT_SIZE + key_size
        if self.size + grow > self.sink.page_size and self.fields:
            self._flush()
        self.fields += (self.position, key_size, child)
        self.parts.append(key)
        self.size += grow
        self.position += key_size - ELEMENT_SIZE

    def _flush(self) -> None:
        count = len(self.fields) // 3
        layout, offsets = _branch_layout(count)
        first = self.parts[1]
        pgid = self.sink.write_page(layout, map(add, self.fields, offsets), BRANCH_PAGE, count, self.parts, self.size)
        if self.parent is None:
            self.parent = BranchLevel(self.sink)
        self.parent.add(first, pgid)
        self._start()

    def finish(self) -> None:
        """Write the last, partly filled page of a level below the top."""
        if self.fields:
            self._flush()

    def finish_root(self) -> int | None:
        """Close the top level and every level it grew: the root's page id (None if empty)."""
        if self.parent is None:
            if len(self.fields) <= 3:
                return self.fields[2] if self.fields else None
            self._flush()
        elif self.fields:
            self._flush()
        assert self.parent is not None
        return self.parent.finish_root()


class LeafPacker:
    """Leaf pages filled up to the page size, written as they fill; each goes to ``parent``."""

    def __init__(self, sink: PageSink, parent: BranchLevel) -> None:
        self.sink = sink
        self.parent = parent
        self.limit = sink.page_size
        self._start()

    def _start(self) -> None:
        self.parts: list[bytes] = [b""]  # a slot for the page's header, then its keys and values
        self.fields: list[int] = []  # per element: flags, key position less 16 * count, key and value sizes
        self.size = PAGE_HEADER_SIZE
        self.position = 0

    def add(self, flags: int, key: bytes, value: bytes) -> None:
        key_size, value_size = len(key), len(value)
        grow = ELEMENT_SIZE + key_size + value_size
        if self.size + grow > self.limit and self.fields:
            self.flush()
        self.fields += (flags, self.position, key_size, value_size)
        self.parts += (key, value)
        self.size += grow
        self.position += grow - 2 * ELEMENT_SIZE

    def flush(self) -> None:
        count = len(self.fields) >> 2
        if not count:
            return
        layout, offsets = _leaf_layout(count)
        first = self.parts[1]
        pgid = self.sink.write_page(layout, map(add, self.fields, offsets), LEAF_PAGE, count, self.parts, self.size)
        self.parent.add(first, pgid)
        self._start()

    def append_rows(self, rows: Iterable[Row], previous: bytes | None, where: str) -> None:
        """Add ``rows`` (plain keys, strictly ascending, each above ``previous``) at the end.

        :meth:`add` inlined for the replay's hundreds of thousands of rows."""
        limit = self.limit
        parts, fields, size, position = self.parts, self.fields, self.size, self.position
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
            value_size = len(value)
            grow = ELEMENT_SIZE + key_size + value_size
            if size + grow > limit and fields:
                self.size = size
                self.flush()
                parts, fields, size, position = self.parts, self.fields, PAGE_HEADER_SIZE, 0
            fields += (0, position, key_size, value_size)
            parts += (key, value)
            size += grow
            position += grow - 2 * ELEMENT_SIZE
            last = key
        self.size, self.position = size, position


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
