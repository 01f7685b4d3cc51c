"""ObjectMeta of stored Kubernetes objects, from protobuf or from JSON."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lifeboat.errors import SnapshotFormatError
from lifeboat.kube.objects.checks import checked
from lifeboat.kube.objects.wire import (
    as_bool,
    as_bytes,
    as_int64,
    as_string,
    fields,
    malformed,
)

# Field numbers from k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto.
_NAME = 1
_GENERATE_NAME = 2
_NAMESPACE = 3
_SELF_LINK = 4
_UID = 5
_RESOURCE_VERSION = 6
_GENERATION = 7
_CREATION_TIMESTAMP = 8
_DELETION_TIMESTAMP = 9
_DELETION_GRACE_PERIOD_SECONDS = 10
_LABELS = 11
_ANNOTATIONS = 12
_OWNER_REFERENCES = 13
_FINALIZERS = 14
_MANAGED_FIELDS = 17

_OWNER_KIND = 1
_OWNER_NAME = 3
_OWNER_UID = 4
_OWNER_API_VERSION = 5
_OWNER_CONTROLLER = 6
_OWNER_BLOCK_OWNER_DELETION = 7

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Go's zero time.Time (0001-01-01T00:00:00Z) as Unix seconds; metav1.Time treats it as unset.
_GO_ZERO_TIME_SECONDS = -62135596800

# Every built-in object the API server persists has ObjectMeta as field 1 of its message.
# These kinds do not: their field 1 is ListMeta, a plain field, or a nested request.
_KINDS_WITHOUT_OBJECT_META = frozenset(
    {
        "AdmissionReview",
        "APIGroup",
        "APIGroupList",
        "APIResourceList",
        "APIVersions",
        "DeploymentRollback",
        "SerializedReference",
        "Status",
        "WatchEvent",
    }
)


@dataclass(frozen=True)
class OwnerReference:
    """One entry of ``metadata.ownerReferences``."""

    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None
    block_owner_deletion: bool | None = None


@dataclass(frozen=True)
class ObjectMeta:
    """The parts of ``metadata`` an inventory, diff or undelete needs.

    Timestamps are whole seconds in UTC: Kubernetes itself drops the nanoseconds of
    ``metav1.Time`` when it reads one back. ``managedFields`` is only counted.
    """

    name: str = ""
    generate_name: str = ""
    namespace: str = ""
    self_link: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    deletion_grace_period_seconds: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    owner_references: tuple[OwnerReference, ...] = ()
    finalizers: tuple[str, ...] = ()
    managed_fields_count: int = 0


def has_object_meta(kind: str) -> bool:
    """Whether objects of ``kind`` carry ObjectMeta as field 1 (lists and a few others don't)."""
    return not (
        kind in _KINDS_WITHOUT_OBJECT_META or kind.endswith("List") or kind.endswith("Options")
    )


def metadata_from_raw(kind: str, raw: bytes) -> ObjectMeta | None:
    """ObjectMeta of a protobuf-encoded object body, or None if this kind has none.

    An envelope without a kind (as in a WatchEvent) gets its field 1 tried as ObjectMeta
    and None if it isn't one; for any other kind a malformed ObjectMeta is an error.
    """
    if not has_object_meta(kind):
        return None
    # Kubernetes' generated marshallers write fields in number order: metadata comes first.
    for number, value in fields(raw, limit=1):
        if number != 1:
            return None
        if kind:
            return decode_object_meta(as_bytes(number, value))
        if not isinstance(value, bytes):
            return None
        try:
            return decode_object_meta(value)
        except SnapshotFormatError:
            return None
    return None


def decode_object_meta(buf: bytes) -> ObjectMeta:
    """Decode a protobuf ``ObjectMeta`` message."""
    strings: dict[int, str] = {}
    generation = 0
    created: datetime | None = None
    deleted: datetime | None = None
    grace: int | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    owners: list[OwnerReference] = []
    finalizers: list[str] = []
    managed = 0
    try:
        for number, value in fields(buf):
            if number <= _RESOURCE_VERSION and type(value) is bytes:
                strings[number] = value.decode("utf-8")
            elif number <= _RESOURCE_VERSION:
                raise malformed(f"ObjectMeta field {number} should be length-delimited")
            elif number == _GENERATION:
                generation = as_int64(number, value)
            elif number == _CREATION_TIMESTAMP:
                created = _decode_time(as_bytes(number, value))
            elif number == _DELETION_TIMESTAMP:
                deleted = _decode_time(as_bytes(number, value))
            elif number == _DELETION_GRACE_PERIOD_SECONDS:
                grace = as_int64(number, value)
            elif number == _LABELS:
                _add_map_entry(labels, as_bytes(number, value))
            elif number == _ANNOTATIONS:
                _add_map_entry(annotations, as_bytes(number, value))
            elif number == _OWNER_REFERENCES:
                owners.append(_decode_owner_reference(as_bytes(number, value)))
            elif number == _FINALIZERS:
                finalizers.append(as_string(number, value))
            elif number == _MANAGED_FIELDS:
                as_bytes(number, value)
                managed += 1
    except UnicodeDecodeError:
        raise malformed("ObjectMeta holds a string that is not valid UTF-8") from None
    return ObjectMeta(
        name=strings.get(_NAME, ""),
        generate_name=strings.get(_GENERATE_NAME, ""),
        namespace=strings.get(_NAMESPACE, ""),
        self_link=strings.get(_SELF_LINK, ""),
        uid=strings.get(_UID, ""),
        resource_version=strings.get(_RESOURCE_VERSION, ""),
        generation=generation,
        creation_timestamp=created,
        deletion_timestamp=deleted,
        deletion_grace_period_seconds=grace,
        labels=labels,
        annotations=annotations,
        owner_references=tuple(owners),
        finalizers=tuple(finalizers),
        managed_fields_count=managed,
    )


def _decode_time(buf: bytes) -> datetime | None:
    # metav1.Time marshals the zero time as an empty message; it is "unset".
    seconds = 0
    for number, value in fields(buf):
        if number == 1:
            seconds = as_int64(number, value)
    if not buf or seconds == _GO_ZERO_TIME_SECONDS:
        return None
    try:
        return _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise malformed(f"timestamp {seconds} s is out of range") from None


def _add_map_entry(target: dict[str, str], buf: bytes) -> None:
    key = value = ""
    for number, val in fields(buf):
        if number == 1:
            key = as_string(number, val)
        elif number == 2:
            value = as_string(number, val)
    target[key] = value


def _decode_owner_reference(buf: bytes) -> OwnerReference:
    strings: dict[int, str] = {}
    flags: dict[int, bool] = {}
    for number, value in fields(buf):
        if number in (_OWNER_KIND, _OWNER_NAME, _OWNER_UID, _OWNER_API_VERSION):
            strings[number] = as_string(number, value)
        elif number in (_OWNER_CONTROLLER, _OWNER_BLOCK_OWNER_DELETION):
            flags[number] = as_bool(number, value)
    return OwnerReference(
        api_version=strings.get(_OWNER_API_VERSION, ""),
        kind=strings.get(_OWNER_KIND, ""),
        name=strings.get(_OWNER_NAME, ""),
        uid=strings.get(_OWNER_UID, ""),
        controller=flags.get(_OWNER_CONTROLLER),
        block_owner_deletion=flags.get(_OWNER_BLOCK_OWNER_DELETION),
    )


def object_meta_from_json(doc: object) -> ObjectMeta:
    """Build ObjectMeta from the ``metadata`` member of a JSON-encoded object."""
    meta = _mapping(doc, "metadata")
    owners = tuple(
        OwnerReference(**_read_json(_mapping(ref, "ownerReferences[]"), _OWNER_JSON))
        for ref in _list(meta, "ownerReferences")
    )
    return ObjectMeta(
        **_read_json(meta, _META_JSON),
        generation=_int(meta, "generation") or 0,
        owner_references=owners,
        finalizers=tuple(_checked_str(f, "finalizers[]") for f in _list(meta, "finalizers")),
        managed_fields_count=len(_list(meta, "managedFields")),
    )


def _read_json(doc: Mapping[str, Any], readers: Mapping[_JsonReader, tuple[str, ...]]) -> dict[str, Any]:
    """Each named field, read by its reader from the JSON key that is its name in camelCase."""
    return {name: read(doc, _camel_case(name)) for read, names in readers.items() for name in names}


def _camel_case(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def _wrong_type(where: str, kind: type) -> SnapshotFormatError:
    return malformed(f"JSON {where} is not {_JSON_TYPES[kind]}")


def _mapping(value: object, what: str) -> dict[str, Any]:
    return checked(value, dict, what, _wrong_type)


def _list(meta: Mapping[str, Any], key: str) -> list[Any]:
    value = meta.get(key)
    return [] if value is None else checked(value, list, f"metadata.{key}", _wrong_type)


def _checked_str(value: object, what: str) -> str:
    return checked(value, str, f"metadata.{what}", _wrong_type)


def _str(meta: Mapping[str, Any], key: str) -> str:
    value = meta.get(key)
    return "" if value is None else _checked_str(value, key)


def _int(meta: Mapping[str, Any], key: str) -> int | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise malformed(f"JSON metadata.{key} is not an integer")
    return value


def _optional_bool(meta: Mapping[str, Any], key: str) -> bool | None:
    value = meta.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise malformed(f"JSON metadata.{key} is not a boolean")


def _string_map(meta: Mapping[str, Any], key: str) -> dict[str, str]:
    value = meta.get(key)
    if value is None:
        return {}
    entries = _mapping(value, f"metadata.{key}")
    return {k: _checked_str(v, f"{key}[{k!r}]") for k, v in entries.items()}


def _time(meta: Mapping[str, Any], key: str) -> datetime | None:
    value = meta.get(key)
    if value is None:
        return None
    text = _checked_str(value, key)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise malformed(f"JSON metadata.{key} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise malformed(f"JSON metadata.{key} has no time zone")
    return parsed.astimezone(UTC).replace(microsecond=0)


_JSON_TYPES: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
_JsonReader = Callable[[Mapping[str, Any], str], Any]
# The fields of ObjectMeta and OwnerReference read from JSON one to one, by their reader.
_META_JSON: dict[_JsonReader, tuple[str, ...]] = {
    _str: ("name", "generate_name", "namespace", "self_link", "uid", "resource_version"),
    _time: ("creation_timestamp", "deletion_timestamp"),
    _int: ("deletion_grace_period_seconds",),
    _string_map: ("labels", "annotations"),
}
_OWNER_JSON: dict[_JsonReader, tuple[str, ...]] = {
    _str: ("api_version", "kind", "name", "uid"),
    _optional_bool: ("controller", "block_owner_deletion"),
}
