"""Inventory of stored objects: decoded entries, per-namespace/per-resource summaries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lifeboat.kube.inventory.kinds import KindQuery, resource_label
from lifeboat.kube.inventory.source import StoredKeyValue
from lifeboat.kube.objects import (
    EncryptionConfiguration,
    StoredObject,
    decode_value,
    parse_registry_key,
)
from lifeboat.kube.objects.encryption import ENCRYPTED_PREFIX
from lifeboat.kube.objects.stored import holds_secret


@dataclass(frozen=True)
class Entry:
    """One key of a source with its decoded object."""

    kv: StoredKeyValue
    obj: StoredObject

    @property
    def namespace(self) -> str | None:
        return self.obj.resource.namespace if self.obj.resource else None

    @property
    def resource(self) -> str:
        return resource_label(self.obj.resource) if self.obj.resource else ""

    @property
    def name(self) -> str:
        return self.obj.resource.name if self.obj.resource else self.kv.key.decode("utf-8", "replace")

    @property
    def uid(self) -> str:
        return self.obj.metadata.uid if self.obj.metadata else ""

    @property
    def is_secret(self) -> bool:
        """Secrets' values are never shown unless asked for."""
        return holds_secret(self.obj)


def keys_in_namespace(kvs: Iterable[StoredKeyValue], namespace: str) -> Iterator[StoredKeyValue]:
    """The keys of ``namespace``'s objects and of its Namespace object, judged by key alone."""
    for kv in kvs:
        parsed = parse_registry_key(kv.key)
        if parsed is None:
            continue
        if parsed.namespace == namespace or (
            parsed.group == "" and parsed.resource == "namespaces" and parsed.name == namespace
        ):
            yield kv


def decode_entries(
    kvs: Iterable[StoredKeyValue], encryption: EncryptionConfiguration | None = None,
) -> Iterator[Entry]:
    """Decode every key; a value that fails to decode keeps its error in ``obj.error``."""
    for kv in kvs:
        yield Entry(kv, decode_value(kv.key, kv.value, encryption))


def select(
    entries: Iterable[Entry], namespace: str | None = None, kind: KindQuery | None = None,
    name: str | None = None,
) -> Iterator[Entry]:
    """The entries in ``namespace`` (a Namespace object counts as in itself), of ``kind``."""
    for e in entries:
        if namespace is not None and e.namespace != namespace and not _is_namespace_object(e, namespace):
            continue
        if kind is not None and not kind.matches(e.obj.resource, e.obj.kind):
            continue
        if name is not None and e.name != name:
            continue
        yield e


def holds_kind(kvs: Iterable[StoredKeyValue], kind: KindQuery, encryption: EncryptionConfiguration | None = None,
               by_key_only: bool = False) -> bool:
    """Whether any key is of ``kind``'s resource or (unless ``by_key_only``) holds an object of that kind."""
    for kv in kvs:
        parsed = parse_registry_key(kv.key)
        if kind.matches(parsed):
            return True
        if not by_key_only and kind.matches(parsed, decode_value(kv.key, kv.value, encryption).kind):
            return True
    return False


def _is_namespace_object(entry: Entry, namespace: str) -> bool:
    r = entry.obj.resource
    return r is not None and r.group == "" and r.resource == "namespaces" and r.name == namespace


@dataclass
class ResourceSummary:
    """How many objects of one resource one namespace holds, their bytes, newest change."""

    namespace: str | None
    resource: str
    count: int = 0
    bytes: int = 0
    newest_mod_revision: int = 0
    encrypted: int = 0
    errors: int = 0


def summarize(entries: Iterable[Entry]) -> list[ResourceSummary]:
    """One summary per (namespace, resource) of decoded entries, cluster-scoped first."""
    groups: dict[tuple[str | None, str], ResourceSummary] = {}
    for e in entries:
        encrypted = e.obj.encryption is not None or e.obj.encoding == "encrypted"
        _add(groups, e.namespace, e.resource, e.kv, encrypted, e.obj.error is not None)
    return _sorted(groups)


def summarize_keys(
    kvs: Iterable[StoredKeyValue], encryption: EncryptionConfiguration | None = None,
) -> tuple[list[ResourceSummary], list[Entry]]:
    """Summaries read from keys and value prefixes only, and the entries that failed.

    Only encrypted values are decoded (to tell which cannot be decrypted): an inventory of
    a whole cluster stays fast. Decoding errors of other objects show when they are listed.
    """
    groups: dict[tuple[str | None, str], ResourceSummary] = {}
    failed: list[Entry] = []
    for kv in kvs:
        parsed = parse_registry_key(kv.key)
        namespace = parsed.namespace if parsed else None
        resource = resource_label(parsed) if parsed else ""
        encrypted = kv.value.startswith(ENCRYPTED_PREFIX)
        error = False
        if encrypted:
            entry = Entry(kv, decode_value(kv.key, kv.value, encryption))
            if entry.obj.error is not None:
                failed.append(entry)
                error = True
        _add(groups, namespace, resource, kv, encrypted, error)
    return _sorted(groups), failed


def _add(groups: dict[tuple[str | None, str], ResourceSummary], namespace: str | None,
         resource: str, kv: StoredKeyValue, encrypted: bool, error: bool) -> None:
    s = groups.get((namespace, resource))
    if s is None:
        s = groups[(namespace, resource)] = ResourceSummary(namespace, resource)
    s.count += 1
    s.bytes += len(kv.value)
    if kv.mod_revision > s.newest_mod_revision:
        s.newest_mod_revision = kv.mod_revision
    s.encrypted += encrypted
    s.errors += error


def _sorted(groups: dict[tuple[str | None, str], ResourceSummary]) -> list[ResourceSummary]:
    return sorted(groups.values(), key=lambda s: (s.namespace is not None, s.namespace or "", s.resource))
