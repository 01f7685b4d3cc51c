"""Decoding one etcd key/value pair written by the Kubernetes API server."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Literal

from lifeboat.errors import DecryptionError, LifeboatError
from lifeboat.kube.objects.encryption import (
    ENCRYPTED_PREFIX,
    EncryptionConfiguration,
    EncryptionInfo,
    decrypt_value,
    identify_encryption,
)
from lifeboat.kube.objects.envelope import PROTOBUF_MAGIC, decode_envelope
from lifeboat.kube.objects.keys import DEFAULT_PREFIX, ResourceKey, parse_registry_key
from lifeboat.kube.objects.meta import ObjectMeta, metadata_from_raw, object_meta_from_json
from lifeboat.kube.objects.wire import malformed

Encoding = Literal["protobuf", "json", "encrypted", "unknown"]


@dataclass(frozen=True)
class StoredObject:
    """One Kubernetes object as found in etcd.

    ``encoding`` is that of the object itself: an encrypted value that was decrypted
    reports "protobuf" or "json" with ``encryption`` set, one that could not be reports
    "encrypted" and an ``error``. ``raw`` is the value exactly as stored; ``plaintext``
    the decrypted bytes, when there were any to decrypt. A value that could not be
    decoded keeps whatever was learnt before the failure and names it in ``error``.
    """

    etcd_key: bytes
    resource: ResourceKey | None
    api_version: str
    kind: str
    encoding: Encoding
    metadata: ObjectMeta | None
    raw: bytes
    encryption: EncryptionInfo | None = None
    plaintext: bytes | None = None
    error: LifeboatError | None = None


def holds_secret(obj: StoredObject) -> bool:
    """A Secret, by its key or by the kind it says it is (a Secret's value copied under another
    key, which a key-less encryption such as aescbc still decrypts): its values are never shown
    unless asked for."""
    r = obj.resource
    return (r is not None and r.group == "" and r.resource == "secrets") or (
        obj.kind == "Secret" and obj.api_version == "v1")


def decode_value(
    key: bytes,
    value: bytes,
    encryption: EncryptionConfiguration | None = None,
    prefix: bytes = DEFAULT_PREFIX,
) -> StoredObject:
    """Decode one stored value; never raises for bad data, which lands in ``error``."""
    resource = parse_registry_key(key, prefix)
    if not value.startswith(ENCRYPTED_PREFIX):
        return _decode_plain(key, resource, value, value)
    try:
        info = identify_encryption(value)
        if encryption is None:
            return _encrypted(key, resource, value, info, _no_configuration(info))
        group = resource.group if resource else None
        name = resource.resource if resource else None
        info, plaintext = decrypt_value(value, key, encryption, group, name)
    except LifeboatError as exc:
        return _encrypted(key, resource, value, None, exc)
    decoded = _decode_plain(key, resource, value, plaintext)
    return replace(decoded, encryption=info, plaintext=plaintext)

def _decode_plain(
    key: bytes, resource: ResourceKey | None, value: bytes, plain: bytes
) -> StoredObject:
    api_version = kind = ""
    encoding: Encoding = "unknown"
    try:
        if plain.startswith(PROTOBUF_MAGIC):
            encoding = "protobuf"
            envelope = decode_envelope(plain)
            api_version, kind = envelope.api_version, envelope.kind
            metadata = metadata_from_raw(kind, envelope.raw)
        elif plain.startswith(b"{"):
            encoding = "json"
            api_version, kind, metadata = _decode_json(plain)
        else:
            metadata = None
    except LifeboatError as exc:
        return StoredObject(key, resource, api_version, kind, encoding, None, value, error=exc)
    return StoredObject(key, resource, api_version, kind, encoding, metadata, value)


def _decode_json(plain: bytes) -> tuple[str, str, ObjectMeta | None]:
    try:
        doc = json.loads(plain)
    except (ValueError, RecursionError):
        raise malformed("value starts with '{' but is not valid JSON") from None
    if not isinstance(doc, dict):
        raise malformed("JSON value is not an object")
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise malformed("JSON apiVersion or kind is not a string")
    meta = doc.get("metadata")
    return api_version, kind, None if meta is None else object_meta_from_json(meta)


def _no_configuration(info: EncryptionInfo | None) -> LifeboatError:
    what = f"{info.provider} key {info.key_name!r}" if info else "an unknown provider"
    return DecryptionError(
        f"value is encrypted with {what}; pass the kube-apiserver's encryption configuration"
    )


def _encrypted(
    key: bytes,
    resource: ResourceKey | None,
    value: bytes,
    info: EncryptionInfo | None,
    error: LifeboatError,
) -> StoredObject:
    if info is None:
        try:
            info = identify_encryption(value)
        except LifeboatError:
            info = None
    return StoredObject(key, resource, "", "", "encrypted", None, value, info, None, error)
