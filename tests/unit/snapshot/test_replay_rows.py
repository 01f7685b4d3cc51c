"""Captured events become exactly the MVCC rows etcd writes (checked against etcd's own protobuf)."""

from __future__ import annotations

from lifeboat.etcdapi.model import KeyValue
from lifeboat.etcdapi.proto import kv_pb2
from lifeboat.snapshot.mvcc import decode_key_value, decode_revision
from lifeboat.snapshot.replay import encode_key_value, event_row, lease_id_of_row, lease_row
from tests.unit.catalog.capture_records import delete, put


def test_key_value_bytes_equal_etcds_generated_marshaller() -> None:
    for kv in (KeyValue(b"/a", b"v", 5, 9, 3, 0x694D7A2B1C), KeyValue(b"/b", b"", 7, 7, 1),
               KeyValue(b"/n", b"x", 1, 2, 1, -5)):
        expected = kv_pb2.KeyValue(key=kv.key, value=kv.value, create_revision=kv.create_revision,
                                   mod_revision=kv.mod_revision, version=kv.version, lease=kv.lease)
        assert encode_key_value(kv) == expected.SerializeToString()


def test_put_row_is_keyed_by_revision_and_holds_the_whole_key_value() -> None:
    key, value = event_row(12, 2, put(b"/a", b"two", 11, 12, 2, lease=7))
    assert decode_revision(key) == (12, 2, False)
    assert decode_key_value(value, 0, len(value)) == KeyValue(b"/a", b"two", 11, 12, 2, 7)


def test_delete_row_is_a_tombstone_holding_only_the_key() -> None:
    key, value = event_row(14, 0, delete(b"/a", 14))
    assert decode_revision(key) == (14, 0, True)
    assert value == kv_pb2.KeyValue(key=b"/a").SerializeToString()


def test_lease_row_matches_etcds_lease_record() -> None:
    key, value = lease_row(0x694D7A2B1C, 30)
    assert key == (0x694D7A2B1C).to_bytes(8, "big") and lease_id_of_row(key) == 0x694D7A2B1C
    assert value == bytes([0x08]) + _varint(0x694D7A2B1C) + bytes([0x10, 30])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
