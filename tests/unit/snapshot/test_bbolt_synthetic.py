"""The bbolt reader on small hand-built files: hash definition, freelist accounting, errors."""

from __future__ import annotations

import struct
from pathlib import Path

import google_crc32c
import pytest

from lifeboat.errors import NotFound, SnapshotFormatError
from lifeboat.snapshot import snapshot_status
from lifeboat.snapshot.bbolt import MAGIC, BoltFile, fnv64a

PS = 4096


def page(pgid: int, flags: int, count: int, body: bytes) -> bytes:
    return (struct.pack("<QHHI", pgid, flags, count, 0) + body).ljust(PS, b"\0")


def meta(pgid: int, high_water: int, txid: int, freelist: int = 2) -> bytes:
    body = struct.pack("<IIIIQQQQQ", MAGIC, 2, PS, 0, 3, 0, freelist, high_water, txid)
    return page(pgid, 0x04, 0, body + struct.pack("<Q", fnv64a(body)))


def leaf_body(items: list[tuple[int, bytes, bytes]]) -> bytes:
    """Elements then keys and values back to back, as bbolt writes a leaf."""
    elements, data = b"", b""
    for i, (flags, key, value) in enumerate(items):
        pos = 16 * (len(items) - i) + len(data)
        elements += struct.pack("<IIII", flags, pos, len(key), len(value))
        data += key + value
    return elements + data


def inline_bucket(items: list[tuple[bytes, bytes]]) -> bytes:
    body = leaf_body([(0, k, v) for k, v in items])
    return struct.pack("<QQ", 0, 0) + struct.pack("<QHHI", 0, 0x02, len(items), 0) + body


def revision(main: int) -> bytes:
    return struct.pack(">Q", main) + b"_" + struct.pack(">Q", 0)


KEY_ROWS = [(revision(2), b"\x0a\x01a"), (revision(3), b"\x0a\x01b")]
META_ROWS = [(b"consistent_index", struct.pack(">Q", 9))]


def build(path: Path, free_ids: list[int], high_water: int = 5) -> Path:
    root = leaf_body([(1, b"key", inline_bucket(KEY_ROWS)), (1, b"meta", inline_bucket(META_ROWS))])
    freelist = b"".join(struct.pack("<Q", i) for i in free_ids)
    pages = [
        meta(0, high_water, 10),
        meta(1, high_water, 9),
        page(2, 0x10, len(free_ids), freelist),
        page(3, 0x02, 2, root),
    ]
    pages += [page(i, 0x02, 0, b"") for i in range(4, high_water)]
    path.write_bytes(b"".join(pages))
    return path


def expected_hash() -> int:
    crc = google_crc32c.extend(0, b"key")
    for key, value in KEY_ROWS:
        crc = google_crc32c.extend(crc, key + value)
    crc = google_crc32c.extend(crc, b"meta")
    return int(google_crc32c.extend(crc, META_ROWS[0][0] + META_ROWS[0][1]))


def test_status_hashes_bucket_names_keys_and_values_in_order(tmp_path: Path) -> None:
    status = snapshot_status(build(tmp_path / "db", free_ids=[4]))
    assert status.to_etcdutl_json() == {
        "hash": expected_hash(), "revision": 3, "totalKey": 3, "totalSize": 5 * PS,
    }
    assert status.txid == 10 and not status.has_trailer


def test_page_neither_used_nor_free_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SnapshotFormatError, match="page 4 is neither in use nor free"):
        snapshot_status(build(tmp_path / "db", free_ids=[]))


def test_page_both_used_and_free_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SnapshotFormatError, match="both in use and on the freelist"):
        snapshot_status(build(tmp_path / "db", free_ids=[3, 4]))


def test_repeated_freelist_entry_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SnapshotFormatError, match="repeated page id 4"):
        snapshot_status(build(tmp_path / "db", free_ids=[4, 4]))


def test_newer_meta_with_bad_checksum_falls_back_to_the_older(tmp_path: Path) -> None:
    path = build(tmp_path / "db", free_ids=[4])
    data = bytearray(path.read_bytes())
    data[16 + 56] ^= 0xFF
    path.write_bytes(bytes(data))
    with BoltFile.open(path) as db:
        assert (db.meta.page_id, db.meta.txid) == (1, 9)
    assert snapshot_status(path).hash == expected_hash()


def test_file_shorter_than_its_high_water_mark_is_truncated(tmp_path: Path) -> None:
    path = build(tmp_path / "db", free_ids=[4])
    path.write_bytes(path.read_bytes()[: 4 * PS])
    with pytest.raises(SnapshotFormatError, match="truncated"):
        snapshot_status(path)


def test_empty_file_is_not_a_snapshot(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(SnapshotFormatError, match="too short"):
        snapshot_status(tmp_path / "empty")


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        snapshot_status(tmp_path / "nope.db")


def test_fnv64a_matches_the_published_vector() -> None:
    assert fnv64a(b"a") == 0xAF63DC4C8601EC8C
