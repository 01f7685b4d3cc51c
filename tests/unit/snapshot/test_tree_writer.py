"""The page sink of the bbolt writer: pages gathered in one reused buffer."""

from __future__ import annotations

import io

import pytest

from lifeboat.snapshot import tree_writer
from lifeboat.snapshot.bbolt import LEAF_PAGE, PAGE_HEADER
from lifeboat.snapshot.tree_writer import PageSink

PAGE = 4096


def expected_page(pgid: int, count: int, body: bytes, pages: int = 1) -> bytes:
    return (PAGE_HEADER.pack(pgid, LEAF_PAGE, count, pages - 1) + body).ljust(pages * PAGE, b"\0")


@pytest.mark.parametrize("flush_bytes", [1, 3 * PAGE, 8 << 20], ids=["every-page", "every-few", "at-the-end"])
def test_a_short_page_after_a_long_one_is_padded_with_zeros_not_the_long_ones_bytes(
    flush_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tree_writer, "_FLUSH_BYTES", flush_bytes)
    out = io.BytesIO()
    out.write(b"\xee" * 3 * PAGE)  # the pages below the high-water mark
    sink = PageSink(out, PAGE, 3)
    long, short = b"L" * (PAGE + 100), b"s" * 10  # the long one needs an overflow page
    written = [(sink.write(LEAF_PAGE, 1, long), long, 2), (sink.write_parts(LEAF_PAGE, 2, b"e", [short, b""]), b"e" + short, 1),
               (sink.write(LEAF_PAGE, 3, long), long, 2), (sink.write(LEAF_PAGE, 4, b""), b"", 1)]
    sink.flush()

    assert [pgid for pgid, _, _ in written] == [3, 5, 6, 8] and sink.next_pgid == 9 and sink.pages_written == 6
    assert out.getvalue() == b"\xee" * 3 * PAGE + b"".join(
        expected_page(pgid, n, body, pages) for n, (pgid, body, pages) in enumerate(written, 1))
