"""Leaf pages of a bbolt file summarised in file order, as its bytes go by.

The status hash (see :mod:`.status`) walks buckets in key order, which is not file order;
reading each leaf page where the walk finds it costs a ``pread`` and a few microseconds of
Python per page, and a snapshot of small keys has hundreds of thousands of them. A
:class:`PageScan` is fed the file's bytes front to back (from a file read in large blocks, or
from etcd's snapshot stream while it is being spooled: the Maintenance.Snapshot stream is the
db file written out front to back, bbolt ``Tx.WriteTo``) and keeps, for every page that looks
like an ordinary leaf, its element count and key-shape flag, and a running CRC-32C of the keys
and values of every such page so far (:attr:`PageScan.chain`). The key-order walk then takes
the CRC of any run of consecutive leaf pages from two chain values (:func:`crc_join`) and
reads only what the scan could not summarise.

A summary is a fact about the bytes at one page id, nothing more: the walk alone decides
whether a page is live (referenced from a bucket) and checks what bbolt's ``Tx.Check`` checks.
Pages of the freelist or overflow pages that happen to look like leaves are summarised too and
never used; a live page the scan skipped (inside what looked like another page's overflow, or
too large to hold) has no summary and is read as before.

A snapshot has one page header per 4 KiB, so the scan classifies its pages a group at a
time: a column of one header or element field, one value per page, is read as one Python
int with a 32-bit lane per page (:class:`_Lanes`), and each check is a few operations on
such ints instead of a loop of Python per page. Leaves the lanes cannot decide (with
overflow pages, or more elements than the lanes look at) are read one by one.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from itertools import accumulate, compress
from typing import Final

import google_crc32c

from .bbolt import ELEMENT_SIZE, LEAF_PAGE, MAGIC, PAGE_HEADER, PAGE_HEADER_SIZE, VERSION

SUMMARISED: Final = 0x01
REVISION_KEYS: Final = 0x02  # every key has the length of an etcd revision key (17, or 18 with "t")
_REVISION_KEY = 17
# A page (with its overflow) longer than this is left to the walk rather than held across chunks.
_MAX_SPAN = 1 << 20
# Pages classified together (one lane each). Offsets in the piece and page ids are put in
# lanes, which hold values below 2**31: longer pieces are fed in parts.
_GROUP_BYTES = 1 << 20
_LARGEST_PIECE = 1 << 26
_LANE_LIMIT = 1 << 31
# A leaf with more elements than this is read one by one (etcd's revisions fill 2-4 per page).
_LANE_ELEMENTS = 8
# Below one ordinary leaf in this many pages, a group's leaves are read one by one, and so
# is the next group (of at least _MODE_FROM pages: the rest of a piece after a cut page).
_SPARSE = 8
_MODE_FROM = 32
_META_HEAD = struct.Struct("<III")
_ONE_IF_SET = bytes([0] + [1] * 255)
_layouts: dict[int, struct.Struct] = {}
_zeros = bytes(_MAX_SPAN)


class PageScan:
    """Summaries of the leaf pages of one bbolt file, fed its bytes in order (:meth:`feed`).

    Per page id: :attr:`state` (``SUMMARISED | REVISION_KEYS``, or 0), :attr:`count` (its
    elements), :attr:`overflow`, :attr:`length` (bytes of its keys and values, back to back)
    and :attr:`chain`: the CRC-32C of the keys and values of every summarised page up to and
    including this one, in file order (a page without a summary adds nothing).
    """

    def __init__(self) -> None:
        self.page_size = 0  # 0 until the first meta page is read; stays 0 if it is unreadable
        self.state = bytearray()
        self.chain = array("I")
        self.length = array("I")
        self.count = array("H")
        self.overflow = array("H")
        self._carry = b""
        self._disabled = False
        self._skip = 0  # pages still to come that are a summarised page's overflow
        self._sparse = False  # the last group had few leaves: read the next one page by page

    def feed(self, chunk: bytes | memoryview) -> None:
        """The next bytes of the file (any length; the last pieces may be etcd's trailer).

        Nothing of ``chunk`` is kept by reference: a view's buffer may be reused after.
        """
        if self._disabled:
            return
        if len(chunk) > _LARGEST_PIECE:
            for start in range(0, len(chunk), _LARGEST_PIECE):
                self.feed(chunk[start : start + _LARGEST_PIECE])
            return
        if not self.page_size:
            chunk, self._carry = self._carry + chunk, b""
            if not self._read_page_size(chunk):
                return
        start = 0
        while self._carry and start < len(chunk):
            # Only the page cut off at the end of the previous piece is completed from this
            # one, not joined with all of it: a copy of every piece, a fresh 1 MiB mapping
            # each, cost more than the scan itself.
            need = self._carried_span() - len(self._carry)
            head = self._carry + chunk[start : start + need]
            start += need
            self._carry = head[self._scan(head, 0) :]
        if start < len(chunk):
            self._carry = bytes(chunk[self._scan(chunk, start) :])

    def _carried_span(self) -> int:
        """How long the page the carry starts with is, as far as :meth:`_scan` holds it whole."""
        ps = self.page_size
        if len(self._carry) < PAGE_HEADER_SIZE:
            return ps
        page_id, flags, _count, overflow = PAGE_HEADER.unpack_from(self._carry)
        span: int = (overflow + 1) * ps
        if page_id != len(self.state) or flags != LEAF_PAGE or span > _MAX_SPAN:
            return ps  # skipped a page at a time
        return span

    def _read_page_size(self, buf: bytes) -> bool:
        if len(buf) < PAGE_HEADER_SIZE + _META_HEAD.size:
            self._carry = buf  # too little yet to read page 0's meta
            return False
        magic, version, page_size = _META_HEAD.unpack_from(buf, PAGE_HEADER_SIZE)
        if magic != MAGIC or version != VERSION or page_size < 512 or page_size & (page_size - 1):
            # The walk reads every page itself; it also reports what is wrong with the meta.
            self._disabled = True
            self._carry = b""
            return False
        self.page_size = page_size
        return True

    def _scan(self, buf: bytes | memoryview, start: int) -> int:
        """Summarise the whole pages of ``buf`` from ``start`` on; returns where the unread rest starts."""
        ps = self.page_size
        group = max(1, _GROUP_BYTES // ps)
        pos = start
        while len(buf) - pos >= ps:
            pages = min(group, (len(buf) - pos) // ps)
            if len(self.state) + pages >= _LANE_LIMIT:
                # Page ids too large for a lane (a db of 8 TiB): the walk reads the rest itself.
                self._disabled = True
                return len(buf)
            done = self._scan_group(buf, pos, pages)
            pos += done * ps
            if done < pages:
                break  # a page whose overflow comes with the next piece
        return pos

    def _scan_group(self, buf: bytes | memoryview, pos: int, pages: int) -> int:
        """Summarise ``pages`` pages from ``pos``; returns how many were (fewer when one is cut off)."""
        ps, first = self.page_size, len(self.state)
        if self._sparse:
            return self._scan_sparse(buf, pos, pages)
        found = _classify(buf, pos, pages, first, ps)
        done, spans = pages, 0
        skip = min(self._skip, pages)
        self._skip -= skip
        found.clear(0, skip)
        single = found.single
        at = bisect_left(single, skip)
        while at < len(single):
            lane = single[at]
            at += 1
            page = pos + lane * ps
            page_id, flags, count, overflow = PAGE_HEADER.unpack_from(buf, page)
            span = (overflow + 1) * ps
            if page_id != first + lane or flags != LEAF_PAGE or span > _MAX_SPAN:
                continue
            if page + span > len(buf):
                done = lane  # the rest of this page comes with the next piece
                break
            summary = _leaf_summary(buf, page, span, count)
            if summary is None:
                continue
            found.states[lane], data, end = summary
            found.counts[lane], found.lengths[lane], found.overflows[lane] = count, end - data, overflow
            found.starts[lane], found.ends[lane] = data, end
            if not overflow:
                continue
            # The overflow pages hold this page's data; they keep no summary of their own.
            spans += 1
            skip = lane + 1 + overflow
            found.clear(lane + 1, skip)
            at = bisect_left(single, skip)
            if skip > pages:
                self._skip = skip - pages
        states = found.states[:done]
        if done >= _MODE_FROM:
            plain = done - states.count(0) - spans  # leaves summarised without overflow pages
            self._sparse = plain * _SPARSE < done
        self.state += states
        self.count.extend(found.counts[:done])
        self.length.extend(found.lengths[:done])
        self.overflow.extend(found.overflows[:done])
        # The running CRC over the summarised pages, then the value after each page of the group.
        pieces = _pieces(buf, map(slice, compress(found.starts, states), compress(found.ends, states)))
        values = list(accumulate(pieces, google_crc32c.extend, initial=self.chain[-1] if self.chain else 0))
        self.chain.extend(map(values.__getitem__, accumulate(states.translate(_ONE_IF_SET))))
        return done


    def _scan_sparse(self, buf: bytes | memoryview, pos: int, pages: int) -> int:
        """:meth:`_scan_group` a page at a time, for pages that are mostly a few leaves' overflow."""
        ps, first = self.page_size, len(self.state)
        chain = self.chain[-1] if self.chain else 0
        self.state += bytes(pages)
        self.chain.extend(array("I", [chain]) * pages)
        for column in (self.length, self.count, self.overflow):
            column.frombytes(bytes(pages * column.itemsize))
        states, chains, lengths, counts, overflows = self.state, self.chain, self.length, self.count, self.overflow
        header, extend, end_id, piece = PAGE_HEADER.unpack_from, google_crc32c.extend, first + pages, _slicer(buf)
        pgid = first + min(self._skip, pages)
        self._skip -= pgid - first
        page, size, plain = pos + (pgid - first) * ps, len(buf), 0
        while pgid < end_id:
            page_id, flags, count, overflow = header(buf, page)
            span = (overflow + 1) * ps
            summary = None
            if page_id == pgid and flags == LEAF_PAGE and span <= _MAX_SPAN:
                if page + span > size:
                    break  # the rest of this page comes with the next piece
                summary = _leaf_summary(buf, page, span, count)
            if summary is None:
                page, pgid = page + ps, pgid + 1
                continue
            states[pgid], data, end = summary
            chain = extend(chain, piece(slice(data, end)))
            chains[pgid:end_id] = array("I", [chain]) * (end_id - pgid)
            lengths[pgid], counts[pgid], overflows[pgid] = end - data, count, overflow
            plain += not overflow
            # The overflow pages hold this page's data; they keep no summary of their own.
            page, pgid = page + span, pgid + overflow + 1
        self._skip = max(0, pgid - end_id)
        done = min(pgid, end_id) - first
        for kept in (self.state, self.chain, self.length, self.count, self.overflow):
            del kept[first + done :]
        if done >= _MODE_FROM:
            self._sparse = plain * _SPARSE < done
        return done


class _Found:
    """Summaries of a group of pages, one entry per page, as :func:`_classify` found them."""

    def __init__(self, states: bytearray, counts: array[int], lengths: array[int], starts: list[int],
                 ends: list[int], single: Sequence[int], by_lanes: bool = True) -> None:
        self.states = states
        self.counts = counts
        self.lengths = lengths
        self.overflows = array("H", bytes(2 * len(states)))
        self.starts = starts  # where each summarised page's keys and values start in the buffer
        self.ends = ends  # and end; a page without a summary has an empty range
        self.single = single  # leaves at their own id that need a look of their own
        self.by_lanes = by_lanes  # whether the lanes summarised pages (else only ``single`` will be)

    @classmethod
    def empty(cls, n: int, single: Sequence[int]) -> _Found:
        """No page summarised yet."""
        return cls(bytearray(n), array("H", bytes(2 * n)), array("I", bytes(4 * n)), [0] * n, [0] * n,
                   single, by_lanes=False)

    def clear(self, first: int, end: int) -> None:
        """No summary for the pages ``first``..``end - 1`` (overflow pages the lanes took for leaves)."""
        end = min(end, len(self.states))
        if not self.by_lanes or first >= end:
            return
        self.states[first:end] = bytes(end - first)
        self.counts[first:end] = array("H", bytes(2 * (end - first)))
        self.lengths[first:end] = array("I", bytes(4 * (end - first)))
        self.starts[first:end] = self.ends[first:end] = [0] * (end - first)


class _Lanes:
    """Constants for ``n`` 32-bit lanes of one int: lane ``j`` is bits ``32j..32j+31``.

    Every value put in a lane stays below 2**31, so adding lanes never carries into the next
    one, and bit 31 of a lane serves as its true/false bit (:meth:`nonzero`, :meth:`at_least`).
    """

    def __init__(self, n: int, one: int, page_offsets: int, ids: int) -> None:
        self.n = n
        self.one = one  # 1 in every lane
        self.true = one << 31
        self.low31 = one * 0x7FFFFFFF
        self.low16 = one * 0xFFFF
        self.field = one * 0x00FFFFFF
        self.page_offsets = page_offsets  # lane j: j * page size
        self.ids = ids  # lane j: j

    @classmethod
    def of_pages(cls, n: int, page_size: int) -> _Lanes:
        def lanes(values: range) -> int:
            return int.from_bytes(array("I", values).tobytes(), "little")

        return cls(n, int.from_bytes(b"\x01\x00\x00\x00" * n, "little"),
                   lanes(range(0, n * page_size, page_size)), lanes(range(n)))

    def first(self, n: int) -> _Lanes:
        """The same constants for the first ``n`` lanes."""
        mask = (1 << 32 * n) - 1
        return _Lanes(n, self.one & mask, self.page_offsets & mask, self.ids & mask)

    def nonzero(self, x: int) -> int:
        """Bit 31 set in the lanes of ``x`` that are not zero (any 32-bit lanes)."""
        return (((x & self.low31) + self.low31) | x) & self.true

    def at_least(self, x: int, m: int) -> int:
        """Bit 31 set in the lanes of ``x`` that are >= ``m`` (lanes and ``m`` below 2**31)."""
        return (x + self.one * ((1 << 31) - m)) & self.true

    def at_most(self, x: int, m: int) -> int:
        """Bit 31 set in the lanes of ``x`` that are <= ``m`` (lanes and ``m`` below 2**31)."""
        return (self.one * ((1 << 31) + m) - x) & self.true

    def fill(self, truth: int) -> int:
        """All 32 bits set in the lanes whose bit 31 is set in ``truth``."""
        return (truth >> 31) * 0xFFFFFFFF

    def words(self, x: int) -> list[int]:
        return memoryview(x.to_bytes(4 * self.n, "little")).cast("I").tolist()

    def lanes_set(self, truth: int) -> list[int]:
        """The lanes whose bit 31 is set in ``truth``, in order."""
        found, flags = [], truth.to_bytes(4 * self.n, "little")[3::4]
        lane = flags.find(0x80)
        while lane != -1:
            found.append(lane)
            lane = flags.find(0x80, lane + 1)
        return found


@lru_cache(maxsize=2)
def _group_lanes(page_size: int) -> _Lanes:
    return _Lanes.of_pages(max(1, _GROUP_BYTES // page_size), page_size)


def _lanes(n: int, page_size: int) -> _Lanes:
    lanes = _group_lanes(page_size)
    return lanes if n == lanes.n else lanes.first(n)


def _classify(buf: bytes | memoryview, pos: int, n: int, first: int, ps: int) -> _Found:
    """Summaries of the ``n`` pages of ``buf`` from ``pos`` (page ids from ``first``), all at once.

    A page is summarised here when it is a leaf at its own id, without overflow, with at most
    ``_LANE_ELEMENTS`` elements laid out the way bbolt writes them (:func:`_leaf_summary`).
    """
    lanes = _lanes(n, ps)
    with memoryview(buf) as view, view[pos : pos + n * ps].cast("I") as words:
        stride = ps // 4

        def column(word: int) -> int:
            return int.from_bytes(words[word::stride].tobytes(), "little")

        # Header: page id (two words), flags and count (one word: count in the high half), overflow.
        misplaced = column(0) ^ (lanes.ids + lanes.one * first) | column(1)
        kind = column(2)
        leaf = lanes.true & ~lanes.nonzero(misplaced | ((kind & lanes.low16) ^ lanes.one * LEAF_PAGE))
        count = (kind >> 16) & lanes.low16
        overflow = lanes.nonzero(column(3))
        plain = leaf & ~overflow
        if plain.bit_count() * _SPARSE < n:
            # Mostly large values (a leaf and its overflow pages): too few leaves for the lanes
            # to pay off, each is read by itself.
            return _Found.empty(n, lanes.lanes_set(leaf))
        # Elements: flags, key position (from the element), key size, value size.
        misfit = ragged = 0  # lanes with a field too large to add up / not laid out as bbolt does
        odd_key = 0  # lanes with a key that is not a revision key's length
        data = 0  # bytes of keys and values so far, per lane
        element = 0
        while element < _LANE_ELEMENTS:
            has = lanes.at_least(count, element + 1) & plain
            if not has:
                break
            word = (PAGE_HEADER_SIZE + element * ELEMENT_SIZE) // 4
            flags, position, key, value = column(word), column(word + 1), column(word + 2), column(word + 3)
            misfit |= has & lanes.nonzero((position | key | value) & ~lanes.field)
            position, key, value = position & lanes.field, key & lanes.field, value & lanes.field
            # bbolt writes keys and values in element order right after the element array
            # (node.go ``write``): element i's key starts 16 * (count - i) + data bytes after it.
            expected = (count << 4) + data
            ragged |= has & lanes.nonzero(flags | ((position + lanes.one * (element * ELEMENT_SIZE)) ^ expected))
            odd_key |= has & ~(lanes.at_least(key, _REVISION_KEY) & lanes.at_most(key, _REVISION_KEY + 1))
            data += (key + value) & lanes.fill(has)
            element += 1
        crowded = lanes.at_least(count, element + 1) & plain
        fits = lanes.at_most((count << 4) + data, ps - PAGE_HEADER_SIZE)
    summarised = plain & ~crowded & ~misfit & ~ragged & fits
    revision_keys = summarised & ~odd_key & lanes.at_least(count, 1)
    keep = lanes.fill(summarised)
    data &= keep
    begin = (lanes.page_offsets + lanes.one * (pos + PAGE_HEADER_SIZE) + (count << 4)) & keep
    return _Found(
        states=bytearray(((summarised >> 31) | (revision_keys >> 30)).to_bytes(4 * n, "little")[::4]),
        counts=array("H", lanes.words(count & keep)),
        lengths=array("I", lanes.words(data)),
        starts=lanes.words(begin),
        ends=lanes.words(begin + data),
        single=lanes.lanes_set(leaf & (overflow | crowded)),
    )


def _leaf_summary(buf: bytes | memoryview, pos: int, span: int, count: int) -> tuple[int, int, int] | None:
    """(state, start, end of its keys and values) of the leaf page at ``pos``, or None.

    bbolt writes a leaf's keys and values in element order right after the element array
    (node.go ``write``): then they are one run of bytes. A page laid out any other way, or
    holding a nested bucket, is left to the walk.
    """
    element = pos + PAGE_HEADER_SIZE
    data = cursor = element + count * ELEMENT_SIZE
    if not count:
        return SUMMARISED, data, data
    if data > pos + span:
        return None
    layout = _layouts.get(count)
    if layout is None:
        layout = _layouts[count] = struct.Struct("<" + "IIII" * count)
    fields = layout.unpack_from(buf, element)
    key_sizes = fields[2::4]
    for kpos, ksize, vsize in zip(fields[1::4], key_sizes, fields[3::4]):
        if element + kpos != cursor:
            return None  # not back to back
        cursor += ksize + vsize
        element += ELEMENT_SIZE
    if cursor > pos + span or any(fields[0::4]):
        return None
    state = SUMMARISED
    if min(key_sizes) >= _REVISION_KEY and max(key_sizes) <= _REVISION_KEY + 1:
        state |= REVISION_KEYS
    return state, data, cursor


def _pieces(buf: bytes | memoryview, parts: Iterable[slice]) -> Iterator[bytes]:
    """Bytes of ``buf`` by slice, as :func:`_slicer` gives them, without a call of Python per part."""
    if isinstance(buf, bytes):
        return map(buf.__getitem__, parts)
    return map(bytes, map(buf.__getitem__, parts))


def _slicer(buf: bytes | memoryview) -> Callable[[slice], bytes]:
    """Bytes of ``buf`` by slice: google_crc32c takes no memoryview."""
    if isinstance(buf, bytes):
        return buf.__getitem__
    return lambda part: bytes(buf[part])


def crc_join(crc: int, before: int, after: int, length: int) -> int:
    """``crc`` extended with the ``length`` bytes between two values of one running CRC-32C.

    ``before`` = CRC(X) and ``after`` = CRC(X + B), with len(B) = ``length``; returns
    CRC(A + B) for ``crc`` = CRC(A). CRC-32C with its pre- and post-inversion satisfies
    CRC(A + B) = CRC(B) xor Z(CRC(A), n), where Z(c, n) runs the bare register c over n zero
    bytes (``~extend(~c, zeros(n))``) and is linear in c: so CRC(A + B) = Z(CRC(A) xor
    CRC(X), n) xor CRC(X + B).
    """
    if not length:
        return crc
    zeros = _zeros if length <= _MAX_SPAN else bytes(length)
    shifted = google_crc32c.extend(crc ^ before ^ 0xFFFFFFFF, zeros[:length]) ^ 0xFFFFFFFF
    return int(shifted ^ after)

