"""The envelope the API server's protobuf serializer wraps every stored object in."""

from __future__ import annotations

from dataclasses import dataclass

from lifeboat.kube.objects.wire import as_bytes, as_string, fields, malformed

# k8s.io/apimachinery/pkg/runtime/serializer/protobuf: every protobuf-encoded object
# starts with these four bytes, followed by a runtime.Unknown message.
PROTOBUF_MAGIC = b"k8s\x00"

# runtime.Unknown (k8s.io/apimachinery/pkg/runtime/generated.proto):
# 1 typeMeta {1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding, 4 contentType.
_UNKNOWN_TYPE_META = 1
_UNKNOWN_RAW = 2
_UNKNOWN_CONTENT_ENCODING = 3
_UNKNOWN_CONTENT_TYPE = 4
_TYPE_META_API_VERSION = 1
_TYPE_META_KIND = 2


@dataclass(frozen=True)
class Envelope:
    """A decoded ``runtime.Unknown``: the object's type and its still-encoded bytes."""

    api_version: str
    kind: str
    raw: bytes
    content_encoding: str
    content_type: str


def decode_envelope(value: bytes) -> Envelope:
    """Decode a value that starts with the ``k8s\\0`` magic."""
    if not value.startswith(PROTOBUF_MAGIC):
        raise malformed("no k8s protobuf magic")
    api_version = kind = content_encoding = content_type = ""
    raw = b""
    for field, val in fields(value[len(PROTOBUF_MAGIC) :]):
        if field == _UNKNOWN_TYPE_META:
            api_version, kind = _decode_type_meta(as_bytes(field, val))
        elif field == _UNKNOWN_RAW:
            raw = as_bytes(field, val)
        elif field == _UNKNOWN_CONTENT_ENCODING:
            content_encoding = as_string(field, val)
        elif field == _UNKNOWN_CONTENT_TYPE:
            content_type = as_string(field, val)
    return Envelope(api_version, kind, raw, content_encoding, content_type)


def _decode_type_meta(buf: bytes) -> tuple[str, str]:
    api_version = kind = ""
    for field, val in fields(buf):
        if field == _TYPE_META_API_VERSION:
            api_version = as_string(field, val)
        elif field == _TYPE_META_KIND:
            kind = as_string(field, val)
    return api_version, kind
