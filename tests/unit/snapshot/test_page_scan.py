"""Leaf summaries gathered in file order give the same status as reading every leaf in key order."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import google_crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifeboat.errors import SnapshotFormatError
from lifeboat.snapshot import snapshot_status
from lifeboat.snapshot import page_scan
from lifeboat.snapshot.page_scan import PageScan, crc_join

from .test_bbolt_synthetic import PS, inline_bucket, leaf_body, meta, revision

Row = tuple[bytes, bytes]


def header(pgid: int, flags: int, count: int, overflow: int = 0) -> bytes:
    return struct.pack("<QHHI", pgid, flags, count, overflow)


def leaf(pgid: int, rows: list[Row], overflow: int = 0) -> bytes:
    body = leaf_body([(0, k, v) for k, v in rows])
    return (header(pgid, 0x02, len(rows), overflow) + body).ljust((overflow + 1) * PS, b"\0")


def scattered_leaf(pgid: int, rows: list[Row]) -> bytes:
    """A valid leaf whose keys and values are stored last row first (bbolt never writes one)."""
    elements, data = b"", b""
    for key, value in reversed(rows):
        data += key + value
    for i, (key, value) in enumerate(rows):
        after = sum(len(k) + len(v) for k, v in rows[i + 1 :])
        elements += struct.pack("<IIII", 0, 16 * (len(rows) - i) + after, len(key), len(value))
    return (header(pgid, 0x02, len(rows)) + elements + data).ljust(PS, b"\0")


def branch(pgid: int, children: list[tuple[bytes, int]]) -> bytes:
    elements, keys = b"", b""
    for i, (key, child) in enumerate(children):
        elements += struct.pack("<IIQ", 16 * (len(children) - i) + len(keys), len(key), child)
        keys += key
    return (header(pgid, 0x01, len(children)) + elements + keys).ljust(PS, b"\0")


def rows(first: int, last: int, size: int = 40) -> list[Row]:
    return [(revision(main), bytes([main]) * size) for main in range(first, last + 1)]


# Bucket ``key``'s leaves in key order, and the pages they are on: not file order.
LOW, BIG, MIDDLE, HIGH = rows(2, 3), rows(4, 4, size=6000), rows(5, 6), rows(7, 8)
LEAF_PAGES = {9: LOW, 5: BIG, 7: MIDDLE, 8: HIGH}
META_ROWS = [(b"consistent_index", struct.pack(">Q", 9))]


def build(path: Path, children: tuple[int, ...] = (9, 5, 7, 8), high: list[Row] = HIGH) -> Path:
    """Pages: 3 root, 4 branch of bucket ``key``, 5-6 a leaf with an overflow page, 7 a leaf
    laid out unlike bbolt's, 8 and 9 leaves, 10 free but still holding an old leaf."""
    pages = {
        0: meta(0, 11, 10),
        1: meta(1, 11, 9),
        2: (header(2, 0x10, 1) + struct.pack("<Q", 10)).ljust(PS, b"\0"),
        3: (header(3, 0x02, 2) + leaf_body([
            (1, b"key", struct.pack("<QQ", 4, 0)), (1, b"meta", inline_bucket(META_ROWS))
        ])).ljust(PS, b"\0"),
        4: branch(4, [(LEAF_PAGES[c][0][0], c) for c in children]),
        5: leaf(5, BIG, overflow=1),
        7: scattered_leaf(7, MIDDLE),
        8: leaf(8, high),
        9: leaf(9, LOW),
        10: leaf(10, rows(40, 42)),
    }
    path.write_bytes(b"".join(pages[i] for i in sorted(pages)))
    return path


def expected_hash() -> int:
    crc = google_crc32c.extend(0, b"key")
    for key, value in LOW + BIG + MIDDLE + HIGH:
        crc = google_crc32c.extend(crc, key + value)
    crc = google_crc32c.extend(crc, b"meta")
    return int(google_crc32c.extend(crc, META_ROWS[0][0] + META_ROWS[0][1]))


def scanned(path: Path, piece: int) -> PageScan:
    scan = PageScan()
    data = path.read_bytes()
    for start in range(0, len(data), piece):
        scan.feed(data[start : start + piece])
    return scan


@pytest.mark.parametrize("piece", [1, 1000, PS, PS + 1, 3 * PS - 7, 1 << 20])
def test_status_from_a_scan_fed_in_pieces_of_any_size_equals_the_key_order_hash(
    tmp_path: Path, piece: int
) -> None:
    path = build(tmp_path / "db")
    scan = scanned(path, piece)
    status = snapshot_status(path, scan=scan)
    assert status.to_etcdutl_json() == {
        "hash": expected_hash(), "revision": 8, "totalKey": 7 + 1, "totalSize": 11 * PS,
    }
    # The ordinary leaves came from the scan; the oddly laid out one was read by the walk.
    assert [bool(scan.state[pgid]) for pgid in (5, 7, 8, 9)] == [True, False, True, True]


@pytest.mark.parametrize("piece", [2 * PS + 1, 3 * PS - 7, 5 * PS + 3])
def test_pieces_longer_than_the_longest_page_kept_across_them(
    tmp_path: Path, piece: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(page_scan, "_MAX_SPAN", 2 * PS)
    path = build(tmp_path / "db")
    scan = scanned(path, piece)
    assert snapshot_status(path, scan=scan).hash == expected_hash()
    assert [bool(scan.state[pgid]) for pgid in (5, 7, 8, 9)] == [True, False, True, True]


def test_a_page_cut_between_pieces_is_completed_without_copying_the_next_piece(tmp_path: Path) -> None:
    # A backup feeds 1 MiB pieces; joining the carried page with a whole piece cost a fresh
    # 1 MiB mapping (256 page faults) per piece, more CPU than the scan itself.
    data = build(tmp_path / "db").read_bytes() + bytes(1 << 20)  # then zeroed pages: skipped
    cut = 5 * PS + 100  # inside leaf 5, which has an overflow page
    scan = PageScan()
    scan.feed(data[:cut])
    rest = data[cut:]
    tracemalloc.start()
    try:
        scan.feed(rest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10
    assert [bool(scan.state[pgid]) for pgid in (5, 7, 8, 9)] == [True, False, True, True]


@pytest.mark.parametrize("piece", [1000, PS + 1, 3 * PS - 7])
def test_views_of_one_reused_buffer_scan_like_bytes(tmp_path: Path, piece: int) -> None:
    # A restore feeds views of a few buffers it decodes into again and again: nothing of a
    # view may be kept by reference, or a carried page would change under the scan.
    path = build(tmp_path / "db")
    data, buffer, scan = path.read_bytes(), bytearray(piece), PageScan()
    for start in range(0, len(data), piece):
        part = data[start : start + piece]
        buffer[: len(part)] = part
        scan.feed(memoryview(buffer)[: len(part)])
        buffer[:] = bytes([0xA5]) * piece
    assert snapshot_status(path, scan=scan).hash == expected_hash()
    assert [bool(scan.state[pgid]) for pgid in (5, 7, 8, 9)] == [True, False, True, True]


def test_status_without_a_scan_scans_the_file_itself(tmp_path: Path) -> None:
    assert snapshot_status(build(tmp_path / "db")).hash == expected_hash()


def test_summarised_leaf_referenced_twice_is_rejected(tmp_path: Path) -> None:
    path = build(tmp_path / "db", children=(9, 5, 8, 8))
    with pytest.raises(SnapshotFormatError, match="page 8 is referenced more than once"):
        snapshot_status(path, scan=scanned(path, PS))


def test_summarised_leaf_with_a_short_key_in_bucket_key_is_rejected(tmp_path: Path) -> None:
    path = build(tmp_path / "db", high=[(b"short", b"x")] + HIGH[1:])
    with pytest.raises(SnapshotFormatError, match="5-byte key, not an etcd revision"):
        snapshot_status(path, scan=scanned(path, 1 << 20))


def test_scan_of_a_file_with_another_page_size_is_not_used(tmp_path: Path) -> None:
    path = build(tmp_path / "db")
    other = bytearray(path.read_bytes())
    other[16 + 8 : 16 + 12] = struct.pack("<I", 2 * PS)  # meta page 0 claims 8 KiB pages
    scan = PageScan()
    scan.feed(bytes(other))
    assert scan.page_size == 2 * PS
    assert snapshot_status(path, scan=scan).hash == expected_hash()


@given(st.binary(max_size=3000), st.binary(max_size=3000), st.binary(max_size=3000))
def test_crc_of_a_concatenation_comes_from_two_values_of_a_running_crc(
    first: bytes, before: bytes, second: bytes
) -> None:
    running = google_crc32c.value(before)
    joined = crc_join(google_crc32c.value(first), running, google_crc32c.extend(running, second), len(second))
    assert joined == google_crc32c.value(first + second)


def consecutive(path: Path, leaves: list[list[Row]], children: list[int], overflow_first: bool = False) -> Path:
    """Bucket ``key``: branch page 4 over the leaves at pages 5, 6, ... (``children`` in key order)."""
    pages = {
        0: meta(0, 5 + len(leaves), 10),
        1: meta(1, 5 + len(leaves), 9),
        2: header(2, 0x10, 0).ljust(PS, b"\0"),
        3: (header(3, 0x02, 2) + leaf_body([
            (1, b"key", struct.pack("<QQ", 4, 0)), (1, b"meta", inline_bucket(META_ROWS))
        ])).ljust(PS, b"\0"),
        4: branch(4, [(leaves[c - 5][0][0], c) for c in children]),
    }
    for i, rows_of_leaf in enumerate(leaves):
        pages[5 + i] = leaf(5 + i, rows_of_leaf)
    data = b"".join(pages[i] for i in sorted(pages))
    if overflow_first:  # leaf 5 claims page 6 as its overflow page
        data = data[: 5 * PS] + header(5, 0x02, len(leaves[0]), 1) + data[5 * PS + 16 :]
    path.write_bytes(data)
    return path


RUN = [rows(2 + 2 * i, 3 + 2 * i) for i in range(6)]


def run_hash(leaves: list[list[Row]]) -> int:
    crc = google_crc32c.extend(0, b"key")
    for key, value in [row for rows_of_leaf in leaves for row in rows_of_leaf]:
        crc = google_crc32c.extend(crc, key + value)
    crc = google_crc32c.extend(crc, b"meta")
    return int(google_crc32c.extend(crc, META_ROWS[0][0] + META_ROWS[0][1]))


@pytest.mark.parametrize("piece", [PS, 3 * PS - 7, 1 << 20])
def test_leaves_at_consecutive_pages_are_hashed_as_one_run(tmp_path: Path, piece: int) -> None:
    path = consecutive(tmp_path / "db", RUN, [5, 6, 7, 8, 9, 10])
    status = snapshot_status(path, scan=scanned(path, piece))
    assert (status.hash, status.total_key, status.revision) == (run_hash(RUN), 12 + 1, 13)
    assert status.hash == snapshot_status(path, scan=PageScan()).hash  # every leaf read by the walk


def test_runs_broken_by_key_order_still_hash_in_key_order(tmp_path: Path) -> None:
    order = [8, 9, 5, 6, 7, 10]
    path = consecutive(tmp_path / "db", [RUN[i] for i in (2, 3, 4, 0, 1, 5)], order)
    assert snapshot_status(path, scan=scanned(path, 1 << 20)).hash == run_hash(RUN)


@pytest.mark.parametrize("children", [[5, 6, 7, 6, 8, 9, 10], [5, 6, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 10, 7]])
def test_a_leaf_of_a_run_referenced_twice_is_rejected(tmp_path: Path, children: list[int]) -> None:
    path = consecutive(tmp_path / "db", RUN, children)
    with pytest.raises(SnapshotFormatError, match="referenced more than once"):
        snapshot_status(path, scan=scanned(path, 1 << 20))


def test_a_short_key_inside_a_run_in_bucket_key_is_rejected(tmp_path: Path) -> None:
    leaves = [*RUN[:3], [(b"short", b"x"), *RUN[3][1:]], *RUN[4:]]
    path = consecutive(tmp_path / "db", leaves, [5, 6, 7, 8, 9, 10])
    with pytest.raises(SnapshotFormatError, match="5-byte key, not an etcd revision"):
        snapshot_status(path, scan=scanned(path, 1 << 20))


def test_the_overflow_page_of_a_leaf_in_a_run_referenced_as_a_leaf_is_rejected(tmp_path: Path) -> None:
    path = consecutive(tmp_path / "db", RUN, [5, 6, 7, 8, 9, 10], overflow_first=True)
    with pytest.raises(SnapshotFormatError, match="page 6 is referenced more than once"):
        snapshot_status(path, scan=scanned(path, 1 << 20))


# Pages as a snapshot may hold them: leaves of every layout, branches, zeroed and misplaced pages.
_page_kinds = st.sampled_from(["plain", "plain", "plain", "empty", "crowded", "overflow", "scattered",
                               "nested", "branch", "zero", "misplaced"])


def any_page(pgid: int, kind: str, size: int, count: int) -> bytes:
    rows_of_leaf = [(revision(pgid * 64 + i)[: 17 + (size + i) % 3], bytes([i]) * (size + i)) for i in range(count)]
    if kind == "plain":
        return leaf(pgid, rows_of_leaf)
    if kind == "empty":
        return leaf(pgid, [])
    if kind == "crowded":
        return leaf(pgid, [(revision(i), b"v") for i in range(count + 9)])
    if kind == "overflow":
        return leaf(pgid, [(revision(pgid), b"o" * (PS + size))], overflow=1)
    if kind == "scattered":
        return scattered_leaf(pgid, rows_of_leaf or [(revision(1), b"")])
    if kind == "nested":
        return (header(pgid, 0x02, 1) + leaf_body([(1, b"bucket", inline_bucket(META_ROWS))])).ljust(PS, b"\0")
    if kind == "branch":
        return branch(pgid, [(revision(1), 3)])
    if kind == "misplaced":
        return leaf(pgid + 1, rows_of_leaf)
    return bytes(PS)


@given(st.lists(st.tuples(_page_kinds, st.integers(0, 1200), st.integers(0, 3)), min_size=1, max_size=60),
       st.sampled_from([PS, 5 * PS + 3, 64 * PS, 1 << 20]))
def test_pages_summarised_in_lanes_are_summarised_as_page_by_page(
    pages: list[tuple[str, int, int]], piece: int
) -> None:
    data = meta(0, 2, 1) + meta(1, 2, 1)
    for page in pages:
        data += any_page(len(data) // PS, *page)
    scans = []
    for share in (0, 1 << 30):  # never the lanes, and the lanes for any group holding a plain leaf
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(page_scan, "_SPARSE", share)
            scan = PageScan()
            for start in range(0, len(data), piece):
                scan.feed(data[start : start + piece])
            scans.append(scan)
    by_page, by_lanes = scans
    assert by_lanes.state == by_page.state and by_lanes.chain == by_page.chain
    assert (by_lanes.count, by_lanes.length, by_lanes.overflow) == (by_page.count, by_page.length, by_page.overflow)
    assert sum(1 for state in by_page.state if state) >= sum(1 for kind, _s, _c in pages if kind == "plain")
