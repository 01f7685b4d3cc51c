"""Reading one field of a record's KeyValue without decoding it."""

from __future__ import annotations

import pytest

from lifeboat.catalog.segment_records import version_of
from lifeboat.etcdapi.proto import kv_pb2
from lifeboat.snapshot.mvcc import decode_key_value


def in_body(value: bytes) -> tuple[bytes, int, int]:
    """``value`` between other bytes, as a record's value sits in a segment's records."""
    before, after = b"\x80" * 7, b"\xff\x80\x20\x05" * 3  # varint-like bytes either side
    return before + value + after, len(before), len(before) + len(value)


@pytest.mark.parametrize("fields", [
    {"key": b"/a", "create_revision": 11, "mod_revision": 11, "version": 1, "value": b"v"},
    {"key": b"/a", "create_revision": 11, "mod_revision": 300_000_000, "version": 127, "value": b"v" * 300},
    {"key": b"/a", "create_revision": 11, "mod_revision": 12, "version": 128},
    {"key": b"/a", "create_revision": 1 << 40, "mod_revision": 1 << 40, "version": 1 << 20, "lease": 7},
    {"key": b"/k" * 100, "create_revision": 5, "mod_revision": 5, "version": 1},  # a key of 200 bytes
    {"key": b"/a", "mod_revision": 5, "version": 3},  # no create revision
    {"key": b"/a", "create_revision": 5, "mod_revision": 5},  # no version
    {"key": b"", "create_revision": 5, "mod_revision": 5, "version": 1},
])
def test_the_version_read_in_place_is_the_decoded_one(fields: dict[str, object]) -> None:
    value = kv_pb2.KeyValue(**fields).SerializeToString()  # type: ignore[arg-type]
    body, start, end = in_body(value)
    assert version_of(body, start, end) == decode_key_value(value, 0, len(value)).version == fields.get("version", 0)


def test_fields_in_another_order_are_read_too() -> None:
    value = kv_pb2.KeyValue(version=9, value=b"x").SerializeToString() + \
        kv_pb2.KeyValue(key=b"/a", create_revision=3, mod_revision=4).SerializeToString()
    body, start, end = in_body(value)
    assert version_of(body, start, end) == 9


@pytest.mark.parametrize("cut", [1, 3, 5, 6])
def test_a_value_cut_short_is_refused_not_read_past_its_end(cut: int) -> None:
    value = kv_pb2.KeyValue(key=b"/a", create_revision=300, mod_revision=300, version=1).SerializeToString()
    body, start, end = in_body(value)
    with pytest.raises(ValueError):
        version_of(body, start, start + cut)
