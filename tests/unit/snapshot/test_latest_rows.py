"""The live keys of a snapshot: every shape of row gives what etcd's own decoding gives."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lifeboat.errors import SnapshotFormatError
from lifeboat.snapshot.mvcc import iter_latest
from lifeboat.snapshot.replay import encode_fields, tombstone_value

from .test_bbolt_synthetic import META_ROWS, inline_bucket, leaf_body, meta, page

LONG = b"/registry/" + b"l" * 200  # its length takes two varint bytes


def row_key(main: int, sub: int = 0, mark: bytes = b"") -> bytes:
    return struct.pack(">Q", main) + b"_" + struct.pack(">Q", sub) + mark


def db_with(path: Path, rows: list[tuple[bytes, bytes]]) -> Path:
    root = leaf_body([(1, b"key", inline_bucket(rows)), (1, b"meta", inline_bucket(META_ROWS))])
    pages = [meta(0, 5, 10), meta(1, 5, 9), page(2, 0x10, 0, b""), page(3, 0x02, 2, root), page(4, 0x02, 0, b"")]
    path.write_bytes(b"".join(pages))
    return path


def test_short_and_long_keys_puts_tombstones_and_the_bump_row_give_the_live_keys(tmp_path: Path) -> None:
    rows = [
        (row_key(2), encode_fields(b"/a", 2, 2, 1, b"one", 0)),
        (row_key(2, 1), encode_fields(LONG, 2, 2, 1, b"long", 7)),
        (row_key(3), encode_fields(b"/b", 3, 3, 1, b"gone", 0)),
        (row_key(4), encode_fields(b"/a", 2, 4, 2, b"two", 0)),
        (row_key(4, 1, b"t"), tombstone_value(b"/b")),
        (row_key(5), encode_fields(LONG, 2, 5, 2, b"longer", 0)),
        (row_key(6, 0, b"t"), tombstone_value(LONG)),
        (row_key(7), encode_fields(LONG + b"2", 7, 7, 1, b"", 0)),
        (row_key(1_000_000_007), b""),  # a revision bump's row: no key
    ]
    found = [(kv.key, kv.value, kv.mod_revision, kv.version) for kv in iter_latest(db_with(tmp_path / "db", rows))]
    assert found == [(b"/a", b"two", 4, 2), (LONG + b"2", b"", 7, 1)]
    assert [kv.key for kv in iter_latest(tmp_path / "db", prefix=b"/registry/")] == [LONG + b"2"]


@pytest.mark.parametrize("key", [row_key(2)[:8] + b"-" + row_key(2)[9:], row_key(2, 0, b"x"), row_key(2)[:16]],
                         ids=["separator", "marker", "short"])
def test_a_row_key_that_is_not_an_etcd_revision_is_refused(tmp_path: Path, key: bytes) -> None:
    db = db_with(tmp_path / "db", [(key, encode_fields(b"/a", 2, 2, 1, b"one", 0))])
    with pytest.raises(SnapshotFormatError, match="not an etcd revision|unknown revision marker"):
        list(iter_latest(db))
