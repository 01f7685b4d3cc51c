"""Hand-built protobuf values: the corners the fixtures don't reach."""

from __future__ import annotations

from datetime import UTC, datetime

from lifeboat.kube.objects import decode_object_meta, decode_value, metadata_from_raw

KEY = b"/registry/pods/ns/p"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _number(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value % (1 << 64))


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _field(1, api_version.encode()) + _field(2, kind.encode())
    return b"k8s\x00" + _field(1, type_meta) + _field(2, raw)


def test_list_kinds_have_no_object_meta() -> None:
    list_meta = _field(2, b"12345")  # ListMeta.resourceVersion
    stored = decode_value(KEY, _envelope("v1", "PodList", _field(1, list_meta)))

    assert (stored.kind, stored.metadata, stored.error) == ("PodList", None, None)


def test_object_without_a_metadata_field_has_no_metadata() -> None:
    assert metadata_from_raw("Pod", _field(2, b"spec")) is None
    assert metadata_from_raw("Pod", b"") is None


def test_negative_int64_fields_decode_as_negative() -> None:
    meta = decode_object_meta(_number(7, -1) + _number(10, -30))

    assert (meta.generation, meta.deletion_grace_period_seconds) == (-1, -30)


def test_zero_and_empty_times_are_unset() -> None:
    go_zero_time = _number(1, -62135596800)
    meta = decode_object_meta(_field(8, b"") + _field(9, go_zero_time))

    assert (meta.creation_timestamp, meta.deletion_timestamp) == (None, None)


def test_time_keeps_whole_seconds_like_kubernetes() -> None:
    meta = decode_object_meta(_field(8, _number(1, 1199149261) + _number(2, 999_000_000)))

    assert meta.creation_timestamp == datetime(2008, 1, 1, 1, 1, 1, tzinfo=UTC)


def test_repeated_map_keys_keep_the_last_value() -> None:
    entry = _field(1, b"app") + _field(2, b"old")
    newer = _field(1, b"app") + _field(2, b"new")
    meta = decode_object_meta(_field(11, entry) + _field(11, newer))

    assert dict(meta.labels) == {"app": "new"}


def test_unknown_fields_are_skipped() -> None:
    unknown = _number(99, 5) + _field(100, b"x") + b"\x8d\x06" + b"\x00" * 4  # 101 fixed32
    meta = decode_object_meta(unknown + _field(1, b"web"))

    assert meta.name == "web"
