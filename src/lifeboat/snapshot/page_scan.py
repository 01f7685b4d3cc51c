"""Leaf pages of a bbolt file summarised in file order, as its bytes go by.

The status hash (see :mod:`.status`) walks buckets in key order, which is not file order;
reading each leaf page where the walk finds it costs a ``pread`` and a few microseconds of
Python per page, and a snapshot of small keys has hundreds of thousands of them. A
:class:`PageScan` is fed the file's bytes front to back (from a file read in large blocks, or
from etcd's snapshot stream while it is being spooled: the Maintenance.Snapshot stream is the
db file written out front to back, bbolt ``Tx.WriteTo``) and keeps, for every page that looks
like an ordinary leaf, its element count, key-shape flag and the CRC-32C of its keys and
values. The key-order walk then combines those CRCs (:func:`crc_concat`) and reads only what
the scan could not summarise.

A summary is a fact about the bytes at one page id, nothing more: the walk alone decides
whether a page is live (referenced from a bucket) and checks what bbolt's ``Tx.Check`` checks.
Pages of the freelist or overflow pages that happen to look like leaves are summarised too and
never used; a live page the scan skipped (inside what looked like another page's overflow, or
too large to hold) has no summary and is read as before.
"""

from __future__ import annotations

import struct
from array import array
from typing import Final

import google_crc32c

from .bbolt import ELEMENT_SIZE, LEAF_PAGE, MAGIC, PAGE_HEADER, PAGE_HEADER_SIZE, VERSION

SUMMARISED: Final = 0x01
REVISION_KEYS: Final = 0x02  # every key has the length of an etcd revision key (17, or 18 with "t")
_REVISION_KEY = 17
# A page (with its overflow) longer than this is left to the walk rather than held across chunks.
_MAX_SPAN = 1 << 20
_META_HEAD = struct.Struct("<III")
_layouts: dict[int, struct.Struct] = {}
_zeros = bytes(_MAX_SPAN)


class PageScan:
    """Summaries of the leaf pages of one bbolt file, fed its bytes in order (:meth:`feed`)."""

    def __init__(self) -> None:
        self.page_size = 0  # 0 until the first meta page is read; stays 0 if it is unreadable
        self.state = bytearray()  # per page id: SUMMARISED | REVISION_KEYS, or 0
        self.crc = array("I")  # CRC-32C of the page's keys and values, back to back
        self.length = array("I")  # how many bytes that CRC covers
        self.count = array("H")
        self.overflow = array("H")
        self._carry = b""
        self._disabled = False

    def feed(self, chunk: bytes | memoryview) -> None:
        """The next bytes of the file (any length; the last pieces may be etcd's trailer).

        Nothing of ``chunk`` is kept by reference: a view's buffer may be reused after.
        """
        if self._disabled:
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
        """Summarise the whole pages of ``buf`` from ``start`` on; returns where the unread rest starts.

        One loop, no calls per page: it runs for every page of the file.
        """
        ps = self.page_size
        first = len(self.state)
        pages = (len(buf) - start) // ps
        # Room for every page of this piece, zero (not summarised) until a leaf is found.
        self.state.extend(bytes(pages))
        for column in (self.crc, self.length, self.count, self.overflow):
            column.frombytes(bytes(pages * column.itemsize))
        state, crcs, lengths, counts, overflows = self.state, self.crc, self.length, self.count, self.overflow
        header, value, layouts = PAGE_HEADER.unpack_from, google_crc32c.value, _layouts
        pos, size, pgid = start, len(buf), first
        while pos + ps <= size:
            page_id, flags, count, overflow = header(buf, pos)
            span = (overflow + 1) * ps
            if page_id != pgid or flags != LEAF_PAGE or span > _MAX_SPAN:
                pos += ps
                pgid += 1
                continue
            if pos + span > size:
                break  # the rest of this page comes with the next piece
            # bbolt writes a leaf's keys and values in element order right after the element
            # array (node.go ``write``): then they are one run of bytes. A page laid out any
            # other way, or holding a nested bucket, is left to the walk.
            element = pos + PAGE_HEADER_SIZE
            data = cursor = element + count * ELEMENT_SIZE
            flag = SUMMARISED
            if count and data <= pos + span:
                layout = layouts.get(count)
                if layout is None:
                    layout = layouts[count] = struct.Struct("<" + "IIII" * count)
                fields = layout.unpack_from(buf, element)
                key_sizes = fields[2::4]
                for kpos, ksize, vsize in zip(fields[1::4], key_sizes, fields[3::4]):
                    if element + kpos != cursor:
                        cursor = size + 1  # not back to back
                        break
                    cursor += ksize + vsize
                    element += ELEMENT_SIZE
                if cursor > pos + span or any(fields[0::4]):
                    pos, pgid = pos + ps, pgid + 1
                    continue
                if min(key_sizes) >= _REVISION_KEY and max(key_sizes) <= _REVISION_KEY + 1:
                    flag |= REVISION_KEYS
                crcs[pgid] = value(bytes(buf[data:cursor]))  # google_crc32c takes no memoryview
                lengths[pgid] = cursor - data
            elif count:
                pos, pgid = pos + ps, pgid + 1
                continue
            state[pgid] = flag
            counts[pgid] = count
            overflows[pgid] = overflow
            # The overflow pages hold this page's data; they keep no summary of their own.
            pos += span
            pgid += overflow + 1
        del self.state[pgid:]
        for column in (self.crc, self.length, self.count, self.overflow):
            del column[pgid:]
        return pos


def crc_concat(crc: int, following: int, length: int) -> int:
    """CRC-32C of A + B from ``crc`` = CRC(A), ``following`` = CRC(B) and ``length`` = len(B).

    CRC-32C with its pre- and post-inversion satisfies CRC(A + B) = CRC(B) xor Z(CRC(A), n),
    where Z(c, n) runs the bare register c over n zero bytes: ``~extend(~c, zeros(n))``.
    """
    if not length:
        return crc
    zeros = _zeros if length <= _MAX_SPAN else bytes(length)
    shifted = google_crc32c.extend(crc ^ 0xFFFFFFFF, zeros[:length]) ^ 0xFFFFFFFF
    return int(shifted ^ following)
