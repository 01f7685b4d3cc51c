"""What changed between two sources, key by key, without decoding values."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from lifeboat.kube.inventory.kinds import KindQuery, resource_label
from lifeboat.kube.inventory.source import StoredKeyValue
from lifeboat.kube.objects import parse_registry_key

ChangeType = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class Change:
    """One key present in only one source, or with different bytes in each."""

    change: ChangeType
    key: bytes
    namespace: str | None
    resource: str
    name: str
    a_mod_revision: int | None
    b_mod_revision: int | None


def _change(change: ChangeType, key: bytes, a: StoredKeyValue | None,
            b: StoredKeyValue | None) -> Change:
    parsed = parse_registry_key(key)
    return Change(
        change, key,
        parsed.namespace if parsed else None,
        resource_label(parsed) if parsed else "",
        parsed.name if parsed else key.decode("utf-8", "replace"),
        a.mod_revision if a else None,
        b.mod_revision if b else None,
    )


def diff_keys(a: Iterable[StoredKeyValue], b: Iterable[StoredKeyValue]) -> Iterator[Change]:
    """Merge two key-sorted streams; a key whose bytes are equal on both sides is unchanged."""
    ia, ib = iter(a), iter(b)
    ka, kb = next(ia, None), next(ib, None)
    while ka is not None or kb is not None:
        if kb is None or (ka is not None and ka.key < kb.key):
            assert ka is not None
            yield _change("removed", ka.key, ka, None)
            ka = next(ia, None)
        elif ka is None or kb.key < ka.key:
            yield _change("added", kb.key, None, kb)
            kb = next(ib, None)
        else:
            if ka.value != kb.value:
                yield _change("changed", ka.key, ka, kb)
            ka, kb = next(ia, None), next(ib, None)


def filter_changes(changes: Iterable[Change], namespace: str | None = None,
                   kind: KindQuery | None = None) -> Iterator[Change]:
    """The changes in ``namespace`` (its Namespace object included) and of ``kind``."""
    for c in changes:
        parsed = parse_registry_key(c.key)
        if namespace is not None and c.namespace != namespace and not (
            c.resource == "namespaces" and c.name == namespace
        ):
            continue
        if kind is not None and not kind.matches(parsed):
            continue
        yield c
