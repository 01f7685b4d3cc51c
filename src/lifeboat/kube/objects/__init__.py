"""Kubernetes objects as the API server stores them in etcd: keys, envelopes, metadata.

Pure decoding, no I/O: give :func:`decode_value` an etcd key and value (from a live
etcd or an offline snapshot) and get a :class:`StoredObject` back.
"""

from lifeboat.kube.objects.encryption import (
    EncryptionConfiguration,
    EncryptionInfo,
    EncryptionKey,
    Provider,
    ResourceRule,
    decrypt_value,
    identify_encryption,
    load_encryption_configuration,
    unreadable_reason,
)
from lifeboat.kube.objects.envelope import PROTOBUF_MAGIC, Envelope, decode_envelope
from lifeboat.kube.objects.keys import DEFAULT_PREFIX, ResourceKey, parse_registry_key
from lifeboat.kube.objects.meta import (
    ObjectMeta,
    OwnerReference,
    decode_object_meta,
    metadata_from_raw,
    object_meta_from_json,
)
from lifeboat.kube.objects.stored import StoredObject, decode_value

__all__ = [
    "DEFAULT_PREFIX",
    "PROTOBUF_MAGIC",
    "EncryptionConfiguration",
    "EncryptionInfo",
    "EncryptionKey",
    "Envelope",
    "ObjectMeta",
    "OwnerReference",
    "Provider",
    "ResourceKey",
    "ResourceRule",
    "StoredObject",
    "decode_envelope",
    "decode_object_meta",
    "decode_value",
    "decrypt_value",
    "identify_encryption",
    "load_encryption_configuration",
    "metadata_from_raw",
    "object_meta_from_json",
    "parse_registry_key",
    "unreadable_reason",
]
