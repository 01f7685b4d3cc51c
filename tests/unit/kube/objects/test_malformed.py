"""Truncated or corrupted values raise the lifeboat error, never IndexError and friends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifeboat.errors import SnapshotFormatError
from lifeboat.kube.objects import (
    PROTOBUF_MAGIC,
    ObjectMeta,
    decode_envelope,
    decode_object_meta,
    decode_value,
    metadata_from_raw,
)
from lifeboat.kube.objects.wire import fields
from tests.unit.kube.objects.fixtures import fixture_names, load

KEY = b"/registry/configmaps/ns/name"
SAMPLE = [
    n
    for n in fixture_names()
    if n in {"core.v1.Pod", "core.v1.ConfigMap", "apps.v1.Deployment", "core.v1.WatchEvent"}
]


def _object_meta_bytes(value: bytes) -> bytes:
    envelope = decode_envelope(value)
    field, meta = fields(envelope.raw)[0]
    assert field == 1 and isinstance(meta, bytes)
    return meta


def _ends_on_an_envelope_field(value: bytes, cut: int) -> bool:
    """Whether ``value[:cut]`` is the magic followed by whole runtime.Unknown fields."""
    if cut < len(PROTOBUF_MAGIC):
        return False
    try:
        fields(value[len(PROTOBUF_MAGIC) : cut])
    except SnapshotFormatError:
        return False
    return True


@pytest.mark.parametrize("name", fixture_names())
def test_truncated_value_is_rejected(name: str) -> None:
    value = load(name).protobuf
    step = max(1, len(value) // 64)
    for cut in [*range(0, min(len(value), 64)), *range(64, len(value), step)]:
        stored = decode_value(KEY, value[:cut])
        if _ends_on_an_envelope_field(value, cut):
            # Cut exactly between envelope fields: a shorter but well-formed envelope.
            assert stored.error is None or isinstance(stored.error, SnapshotFormatError)
        elif cut < len(PROTOBUF_MAGIC):
            assert stored.encoding == "unknown"
        else:
            assert isinstance(stored.error, SnapshotFormatError), cut


@pytest.mark.parametrize("name", ["core.v1.Pod", "core.v1.ConfigMap", "apps.v1.Deployment"])
def test_truncated_object_meta_is_rejected_or_a_prefix_of_the_fields(name: str) -> None:
    meta_bytes = _object_meta_bytes(load(name).protobuf)
    full = decode_object_meta(meta_bytes)
    for cut in range(len(meta_bytes)):
        try:
            partial = decode_object_meta(meta_bytes[:cut])
        except SnapshotFormatError:
            continue
        # A cut on a field boundary decodes the fields before it and no others.
        assert partial.managed_fields_count <= full.managed_fields_count
        assert partial.name in ("", full.name)


@pytest.mark.parametrize("name", SAMPLE)
def test_every_single_byte_corruption_gives_a_lifeboat_error_or_an_object(name: str) -> None:
    value = load(name).protobuf
    # The envelope header and ObjectMeta come first; the object body is not parsed.
    for pos in range(min(len(value), 700)):
        for replacement in (0x00, 0xFF, value[pos] ^ 0x80):
            corrupted = value[:pos] + bytes([replacement]) + value[pos + 1 :]
            stored = decode_value(KEY, corrupted)
            assert stored.error is None or isinstance(stored.error, SnapshotFormatError)


def test_varint_that_never_ends_is_rejected() -> None:
    with pytest.raises(SnapshotFormatError, match="varint"):
        fields(b"\x08" + b"\xff" * 11)


def test_length_beyond_the_buffer_is_rejected() -> None:
    with pytest.raises(SnapshotFormatError, match="needs 100 bytes"):
        fields(b"\x0a\x64abc")


def test_group_wire_type_is_rejected() -> None:
    with pytest.raises(SnapshotFormatError, match="wire type 3"):
        fields(b"\x0b")


def test_metadata_field_with_the_wrong_wire_type_is_rejected() -> None:
    with pytest.raises(SnapshotFormatError, match="field 1 should be length-delimited"):
        decode_object_meta(b"\x08\x01")


def test_object_whose_metadata_is_corrupt_reports_an_error() -> None:
    with pytest.raises(SnapshotFormatError):
        metadata_from_raw("Pod", b"\x0a\x02\x0a\x05")


def test_json_value_that_is_not_json_reports_an_error() -> None:
    stored = decode_value(KEY, b'{"apiVersion": "v1", ')
    assert stored.encoding == "json"
    assert isinstance(stored.error, SnapshotFormatError)


def test_json_metadata_of_the_wrong_shape_reports_an_error() -> None:
    stored = decode_value(KEY, b'{"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": []}}')
    assert isinstance(stored.error, SnapshotFormatError)
    assert stored.kind == ""


def test_value_in_no_known_encoding_is_kept_as_unknown() -> None:
    stored = decode_value(KEY, b"\x00\x01plain bytes")
    assert (stored.encoding, stored.error, stored.metadata) == ("unknown", None, None)
    assert stored.raw == b"\x00\x01plain bytes"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_the_magic_never_escape_as_other_exceptions(tail: bytes) -> None:
    stored = decode_value(KEY, b"k8s\x00" + tail)
    assert stored.error is None or isinstance(stored.error, SnapshotFormatError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_object_meta_bytes_decode_or_raise_the_lifeboat_error(data: bytes) -> None:
    try:
        meta = decode_object_meta(data)
    except SnapshotFormatError:
        return
    assert isinstance(meta, ObjectMeta)
