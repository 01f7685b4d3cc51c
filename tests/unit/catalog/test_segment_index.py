"""A version 3 segment's index: written as documented, and refused when its parts disagree."""

from __future__ import annotations

import struct

import pytest

from lifeboat.catalog.segment_index import CREATED, DELETED, FIXED_BYTES, IndexEntry, encode_index, read_index

ENTRIES = [IndexEntry(11, 0, 0, b"/a", CREATED), IndexEntry(12, 40, -7, b"/bb", 0), IndexEntry(12, 90, 0, b"/a", DELETED)]
RECORDS_BYTES = 130


def test_the_columns_are_big_endian_then_the_keys() -> None:
    data = encode_index(ENTRIES)
    assert len(data) == FIXED_BYTES * 3 + len(b"/a/bb/a")
    assert data[:24] == struct.pack(">3Q", 11, 12, 12)
    assert data[24:36] == struct.pack(">3I", 0, 40, 90)
    assert data[36:60] == struct.pack(">3q", 0, -7, 0)
    assert data[60:72] == struct.pack(">3I", 2, 3, 2)
    assert data[72:75] == bytes([CREATED, 0, DELETED]) and data[75:] == b"/a/bb/a"


def test_what_is_written_reads_back() -> None:
    index = read_index(encode_index(ENTRIES), 3, RECORDS_BYTES)
    assert list(index.revisions) == [11, 12, 12] and list(index.leases) == [0, -7, 0]
    assert index.key_list(0, 3) == [b"/a", b"/bb", b"/a"] and index.key_list(1, 2) == [b"/bb"]
    assert index.counts() == (11, 12, 2, 3)


@pytest.mark.parametrize("entries, records, records_bytes, message", [
    (ENTRIES, 4, RECORDS_BYTES, "too short for 4 records"),
    (ENTRIES, 2, RECORDS_BYTES, "key sizes add up"),
    ([ENTRIES[1], ENTRIES[0], ENTRIES[2]], 3, RECORDS_BYTES, "revisions are not in order|offsets are not increasing"),
    ([ENTRIES[0], IndexEntry(12, 90, 0, b"/bb", 0), IndexEntry(12, 40, 0, b"/a", 0)], 3, RECORDS_BYTES,
     "offsets are not increasing"),
    ([IndexEntry(11, 5, 0, b"/a", 0)], 1, RECORDS_BYTES, "offsets are not increasing"),
    (ENTRIES, 3, 90, "offsets are not increasing inside the records"),
    ([IndexEntry(11, 0, 0, b"/a", 64)], 1, RECORDS_BYTES, "unknown flag"),
    ([], 0, RECORDS_BYTES, "lists no record"),
])
def test_an_index_whose_parts_disagree_is_refused(entries: list[IndexEntry], records: int, records_bytes: int,
                                                  message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_index(encode_index(entries), records, records_bytes)
