"""The page sink and packers of the bbolt writer: pages gathered as parts, written every 4 MiB by a thread."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from lifeboat.snapshot import tree_writer
from lifeboat.snapshot.bbolt import BUCKET_LEAF_FLAG, LEAF_PAGE, PAGE_HEADER
from lifeboat.snapshot.tree_writer import BranchLevel, LeafPacker, PageSink

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


def packed_tree(page_size: int, out: BinaryIO) -> tuple[int | None, int]:
    """A tree written into ``out`` by the packer and branch levels: nested-bucket and plain elements
    through :meth:`LeafPacker.add`, then appended rows of every size up to a few overflow pages;
    the root's page id and the pages written."""
    rng = random.Random(8)
    sink = PageSink(out, page_size, 5)
    top = BranchLevel(sink)
    packer = LeafPacker(sink, top)
    for i in range(40):
        flags = BUCKET_LEAF_FLAG if i % 7 == 3 else 0
        packer.add(flags, b"a%03d" % i, rng.randbytes(rng.choice((0, 16, 40, 300))))
    sizes = (0, 1, 20, 120, 600, page_size - 60, page_size, 3 * page_size + 5)
    rows = [(b"b%06d" % i + b"k" * rng.randrange(60), rng.randbytes(rng.choice(sizes))) for i in range(3_000)]
    packer.append_rows(iter(rows), b"a039", "test")
    packer.flush()
    root = top.finish_root()
    sink.flush()
    return root, sink.pages_written


@pytest.mark.parametrize("page_size,sha256,root,pages", [
    (4096, "66fce86a35acae275cc28e5121c270c1868d0726c9fa10187c91964f578529e7", 3554, 3550),
    (1024, "79481789b21d86bc85b2834c9bd2fb4e1359212ca7e4a463a33deb0718149388", 3800, 3796),  # four levels
])
def test_the_pages_of_a_tree_are_the_bytes_lifeboat_has_always_written(
        page_size: int, sha256: str, root: int, pages: int) -> None:
    """Pinned: the bytes of session 8's writer (main 1e9e876) for the same input, so that a faster
    packer writes the same db (compared with etcdutl's output elsewhere) byte for byte."""
    out = io.BytesIO()
    got_root, got_pages = packed_tree(page_size, out)
    assert (hashlib.sha256(out.getvalue()).hexdigest(), got_root, got_pages) == (sha256, root, pages)


def test_pages_written_to_a_file_in_short_writes_and_small_batches_are_the_same_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = io.BytesIO()
    packed_tree(1024, expected)
    short = []

    def short_pwritev(fd: int, buffers: list[bytes | memoryview], offset: int) -> int:
        """Writes at most 1,000 bytes, as a write interrupted by a signal does."""
        data = b"".join(buffers)[:1000]
        short.append(len(data))
        return os.pwrite(fd, data, offset)

    monkeypatch.setattr(tree_writer, "_IOV_MAX", 7)
    monkeypatch.setattr(tree_writer, "_FLUSH_BYTES", 5 * 1024 + 3)
    monkeypatch.setattr(os, "pwritev", short_pwritev)
    with (tmp_path / "db").open("w+b") as out:
        packed_tree(1024, out)
    assert short and max(short) == 1000
    assert (tmp_path / "db").read_bytes() == expected.getvalue()


def test_a_write_that_fails_in_the_writing_thread_is_raised_by_flush(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def full_disk(fd: int, buffers: list[bytes | memoryview], offset: int) -> int:
        calls.append(threading.current_thread().name)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tree_writer, "_FLUSH_BYTES", 5 * 1024 + 3)
    monkeypatch.setattr(os, "pwritev", full_disk)
    with (tmp_path / "db").open("w+b") as out, pytest.raises(OSError) as raised:
        packed_tree(1024, out)
    assert raised.value.errno == errno.ENOSPC
    assert calls == ["lifeboat-page-write"]  # the next batch waited for this one and raised its error


def test_pages_are_written_by_one_write_at_a_time_in_file_order_while_the_next_are_gathered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pwritev
    busy = threading.Lock()
    offsets: list[int] = []
    threads: set[str] = set()

    def one_at_a_time(fd: int, buffers: list[bytes | memoryview], offset: int) -> int:
        assert busy.acquire(blocking=False), "two writes at once"
        try:
            offsets.append(offset)
            threads.add(threading.current_thread().name)
            time.sleep(0.001)
            return real(fd, buffers, offset)
        finally:
            busy.release()

    expected = io.BytesIO()
    packed_tree(1024, expected)
    monkeypatch.setattr(tree_writer, "_FLUSH_BYTES", 64 * 1024)
    monkeypatch.setattr(os, "pwritev", one_at_a_time)
    with (tmp_path / "db").open("w+b") as out:
        packed_tree(1024, out)
    assert threads == {"lifeboat-page-write"} and len(offsets) > 10 and offsets == sorted(offsets)
    assert (tmp_path / "db").read_bytes() == expected.getvalue()


@pytest.mark.parametrize("write_fails", [False, True])
def test_an_error_while_pages_are_packed_waits_for_the_write_in_flight_and_is_the_one_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_fails: bool) -> None:
    real = os.pwritev
    ended: list[str] = []

    def slow(fd: int, buffers: list[bytes | memoryview], offset: int) -> int:
        time.sleep(0.3)
        ended.append("write")
        if write_fails:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, buffers, offset)

    monkeypatch.setattr(tree_writer, "_FLUSH_BYTES", PAGE)
    monkeypatch.setattr(os, "pwritev", slow)
    with (tmp_path / "db").open("w+b") as out, pytest.raises(ValueError, match="malformed row"):
        with PageSink(out, PAGE, 3) as sink:
            sink.write(LEAF_PAGE, 1, b"x" * 100)  # a page's worth: handed to the writing thread
            raise ValueError("malformed row")
    assert ended == ["write"]  # done before the file could be closed
