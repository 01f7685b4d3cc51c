"""Reading a bucket's leaves several pages at a time gives what reading them page by page gives."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lifeboat.errors import SnapshotFormatError
from lifeboat.snapshot import bbolt
from lifeboat.snapshot.bbolt import MAGIC, BoltFile, fnv64a
from lifeboat.snapshot.mvcc import iter_latest
from lifeboat.snapshot.replay import encode_fields, tombstone_value

from .test_bbolt_synthetic import META_ROWS, PS, inline_bucket, leaf_body, page
from .test_latest_rows import row_key


def _meta(pgid: int, high_water: int, txid: int) -> bytes:
    body = struct.pack("<IIIIQQQQQ", MAGIC, 2, PS, 0, 3, 0, 2, high_water, txid)
    return page(pgid, 0x04, 0, body + struct.pack("<Q", fnv64a(body)))


def _leaf(pgid: int, rows: list[tuple[bytes, bytes]]) -> bytes:
    """A leaf page with as many overflow pages as its rows need."""
    body = leaf_body([(0, key, value) for key, value in rows])
    overflow = (16 + len(body) - 1) // PS
    return (struct.pack("<QHHI", pgid, 0x02, len(rows), overflow) + body).ljust((overflow + 1) * PS, b"\0")


def _branch(pgid: int, children: list[tuple[bytes, int]]) -> bytes:
    elements, keys = b"", b""
    for i, (key, child) in enumerate(children):
        elements += struct.pack("<IIQ", 16 * (len(children) - i) + len(keys), len(key), child)
        keys += key
    return page(pgid, 0x01, len(children), elements + keys)


def _row(main: int, key: bytes, value: bytes, version: int = 1) -> tuple[bytes, bytes]:
    return row_key(main), encode_fields(key, main, main, version, value, 0)


# Leaves in key order (dict order) on pages: 9, then 4 (not after it in the file), then 5 with
# its overflow page 6, 7 (right after that overflow page) and 8 (right after 7).
LEAVES = {
    9: [_row(2, b"/a", b"1"), _row(3, b"/b", b"2")],
    4: [_row(4, b"/e", b"0")],
    5: [_row(5, b"/c", b"x" * 5000), _row(6, b"/a", b"3", 2)],
    7: [(row_key(7, 0, b"t"), tombstone_value(b"/b")), _row(8, b"/d", b"4")],
    8: [_row(9, b"/e", b"5", 2)],
}
LIVE = [(b"/a", b"3"), (b"/c", b"x" * 5000), (b"/d", b"4"), (b"/e", b"5")]


def _db(path: Path, leaves: dict[int, list[tuple[bytes, bytes]]], children: list[int] | None = None) -> Path:
    """Bucket ``key`` as two branch pages (10, 11: two children, then the rest) under a root
    branch (12) over ``leaves``."""
    order = list(leaves) if children is None else children
    first = [(leaves[n][0][0] if n in leaves else row_key(99), n) for n in order]
    pages: dict[int, bytes] = {n: _leaf(n, rows) for n, rows in leaves.items()}
    pages[10], pages[11] = _branch(10, first[:2]), _branch(11, first[2:])
    pages[12] = _branch(12, [(first[0][0], 10), (first[2][0], 11)])
    key_bucket = struct.pack("<QQ", 12, 0)
    pages[3] = page(3, 0x02, 2, leaf_body([(1, b"key", key_bucket), (1, b"meta", inline_bucket(META_ROWS))]))
    pages[2] = page(2, 0x10, 0, b"")
    data = bytearray(_meta(0, 13, 10) + _meta(1, 13, 9) + b"\0" * 11 * PS)
    for n, raw in pages.items():
        data[n * PS : n * PS + len(raw)] = raw
    path.write_bytes(bytes(data))
    return path


def _rows(db: BoltFile, together: bool) -> list[tuple[bytes, bytes, bytes]]:
    """Each row's key, value, and the value read back from where the walk says it lies."""
    bucket = db.bucket(b"key")
    assert bucket is not None
    found = []
    walk = db.leaves_read_together(bucket, db.new_seen()) if together else (
        (leaf, leaf[0], 0) for leaf in db.leaves(bucket, db.new_seen()))
    for leaf, home, base in walk:
        buf = leaf[0]
        for _flags, kstart, kend, vend in db.leaf_elements(leaf):
            found.append((bytes(buf[kstart:kend]), bytes(buf[kend:vend]), bytes(home[base + kend : base + vend])))
    return found


@pytest.mark.parametrize("skipped", [0, 1, 3])
@pytest.mark.parametrize("run_bytes", [PS, 2 * PS, 3 * PS, 128 << 10])
def test_leaves_read_together_give_every_row_in_key_order_and_where_it_lies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_bytes: int, skipped: int) -> None:
    monkeypatch.setattr(bbolt, "_RUN_BYTES", run_bytes)
    monkeypatch.setattr(bbolt, "_MOST_SKIPPED", skipped)
    with BoltFile.open(_db(tmp_path / "db", LEAVES)) as db:
        expected = [(key, value) for rows in LEAVES.values() for key, value in rows]
        assert [(k, v) for k, v, _again in _rows(db, True)] == expected
        assert all(value == again for _k, value, again in _rows(db, True))
        assert _rows(db, True) == [(k, v, v) for k, v, _ in _rows(db, False)]
    assert [(kv.key, kv.value) for kv in iter_latest(tmp_path / "db")] == LIVE


def test_only_pages_the_walk_visits_next_are_read_with_a_page(tmp_path: Path) -> None:
    reads: list[tuple[int, int]] = []
    with BoltFile.open(_db(tmp_path / "db", LEAVES)) as db:
        bucket = db.bucket(b"key")
        assert bucket is not None
        real = db.mm.read

        def read(offset: int, size: int) -> bytes:
            reads.append((offset // PS, size // PS))
            return real(offset, size)
        db.mm.read = read  # type: ignore[method-assign]
        assert sum(leaf[3] for leaf, _home, _base in db.leaves_read_together(bucket, db.new_seen())) == 8
    # The root; branches 10 and 11 together; leaf 9; leaf 4 (page 11 is not right after it);
    # branch 11 again; leaf 5 with its overflow page, 7 and 8 in one read.
    assert reads == [(12, 1), (10, 2), (9, 1), (4, 1), (11, 1), (5, 4)]


@pytest.mark.parametrize("children", [[9, 4, 5, 9], [9, 4, 5, 6]])
def test_a_page_referenced_twice_or_inside_another_is_refused_as_when_read_page_by_page(
        tmp_path: Path, children: list[int]) -> None:
    leaves = {n: LEAVES[n] for n in (9, 4, 5)}
    refusals = []
    with BoltFile.open(_db(tmp_path / "db", leaves, children=children)) as db:
        for together in (True, False):
            with pytest.raises(SnapshotFormatError, match="referenced more than once|carries the id") as refused:
                _rows(db, together)
            refusals.append(str(refused.value))
    assert refusals[0] == refusals[1]


def test_a_child_past_the_high_water_mark_is_refused(tmp_path: Path) -> None:
    leaves = {n: LEAVES[n] for n in (9, 4, 5)}
    with BoltFile.open(_db(tmp_path / "db", leaves, children=[9, 4, 5, 40])) as db, \
            pytest.raises(SnapshotFormatError, match="outside the database"):
        _rows(db, True)


@pytest.mark.parametrize("main", range(1, 11))
def test_leaves_from_a_key_start_with_the_one_that_may_hold_it_and_give_every_row_after(
        tmp_path: Path, main: int) -> None:
    rows = [key for rows in LEAVES.values() for key, _ in rows]
    from_key = row_key(main)
    with BoltFile.open(_db(tmp_path / "db", LEAVES)) as db:
        bucket = db.bucket(b"key")
        assert bucket is not None
        found = [bytes(leaf[0][kstart:kend])
                 for leaf, _home, _base in db.leaves_read_together(bucket, db.new_seen(), from_key=from_key)
                 for _flags, kstart, kend, _vend in db.leaf_elements(leaf)]
    assert found == rows[len(rows) - len(found):], "a tail of the rows, in order"
    assert [key for key in rows if key >= from_key] == [key for key in found if key >= from_key]
    # Nothing before the leaf that may hold the key: only rows of the first leaf read precede it.
    first_leaf = next([key for key, _ in leaf] for leaf in LEAVES.values() if leaf[0][0] == found[0])
    assert [key for key in found if key < from_key] == [key for key in first_leaf if key < from_key]
