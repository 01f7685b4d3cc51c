"""What changed between two stored versions of one Kubernetes object, in words.

JSON-stored objects (custom resources) are compared field by field (``spec.replicas: 2 → 3``);
protobuf ones by their metadata (labels, annotations, generation, finalizers, owners,
deletion) and their size, since their bodies need the API's schemas to read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lifeboat.kube.inventory.views import secret_field_shown
from lifeboat.kube.objects.stored import StoredObject, holds_secret

# Fields that change on every write and say nothing about what the writer changed.
_NOISE = ("metadata.resourceVersion", "metadata.managedFields")
_MAX_CHANGES = 20


_NOT_SHOWN = "(value not shown)"


def describe_change(before: StoredObject | None, after: StoredObject | None) -> tuple[str, ...]:
    """One line per change from ``before`` to ``after`` (None: absent); a Secret's values are
    never shown, only which of them changed."""
    if before is None and after is None:
        return ()
    if before is None:
        assert after is not None
        return (f"created ({len(after.raw)} bytes, {after.encoding})",)
    if after is None:
        return ("deleted",)
    if before.raw == after.raw:
        return ("stored bytes unchanged",)
    secret = holds_secret(before) or holds_secret(after)
    if before.encoding == after.encoding == "json" and before.error is None and after.error is None:
        changes = list(_json_changes(_json(before), _json(after), secret))
    else:
        changes = list(_meta_changes(before, after, secret))
        if len(before.raw) != len(after.raw):
            changes.append(f"size: {len(before.raw)} → {len(after.raw)} bytes")
        if not changes:
            changes.append(f"{after.encoding} body changed ({len(after.raw)} bytes)")
    if len(changes) > _MAX_CHANGES:
        changes = [*changes[:_MAX_CHANGES], f"... and {len(changes) - _MAX_CHANGES} more"]
    return tuple(changes) or ("only resourceVersion/managedFields changed",)


def _json(obj: StoredObject) -> Any:
    return json.loads(obj.plaintext if obj.plaintext is not None else obj.raw)


def _flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from _flatten(value[key], f"{path}.{key}" if path else str(key))
    else:
        yield path, value


def _json_changes(before: Any, after: Any, secret: bool) -> Iterator[str]:
    old, new = ({path: v for path, v in _flatten(doc) if not path.startswith(_NOISE)} for doc in (before, after))
    return _changes(old, new, _secret_hidden if secret else _nothing_hidden, removed="{key}: removed (was {was})",
                    added="{key}: added {now}", changed="{key}: {was} → {now}")


def _secret_hidden(key: str) -> bool:
    return not secret_field_shown(key)


def _nothing_hidden(key: str) -> bool:
    return False


def _changes(old: Mapping[str, Any], new: Mapping[str, Any], hidden: Callable[[str], bool],
             **lines: str) -> Iterator[str]:
    """One line per key ``removed``, ``added`` or ``changed``, in key order, from those format
    strings; the values of keys ``hidden`` says are hidden are compared, not shown."""
    for key in sorted(set(old) | set(new)):
        how = "removed" if key not in new else "added" if key not in old else "changed"
        if how != "changed" or old[key] != new[key]:
            if hidden(key):
                yield lines[how].format(key=key, was=_NOT_SHOWN, now=_NOT_SHOWN)
            else:
                yield lines[how].format(key=key, was=_show(old.get(key)), now=_show(new.get(key)))


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _meta_changes(before: StoredObject, after: StoredObject, secret: bool) -> Iterator[str]:
    a, b = before.metadata, after.metadata
    if a is None or b is None:
        return
    yield from _map_changes("label", a.labels, b.labels, _nothing_hidden)
    # Any annotation of a Secret may hold secret material (kubectl's last-applied-configuration
    # holds its data): which changed is said, never their values.
    yield from _map_changes("annotation", a.annotations, b.annotations,
                            _all_hidden if secret else _nothing_hidden)
    for name in ("generation", "uid", "deletion_timestamp", "finalizers"):
        old, new = getattr(a, name), getattr(b, name)
        if old != new:
            yield f"metadata.{name}: {old} → {new}"
    if a.owner_references != b.owner_references:
        yield f"metadata.ownerReferences: {len(a.owner_references)} → {len(b.owner_references)}"


def _all_hidden(key: str) -> bool:
    return True


def _map_changes(what: str, old: Mapping[str, str], new: Mapping[str, str],
                 hidden: Callable[[str], bool]) -> Iterator[str]:
    return _changes(old, new, hidden, removed=what + " {key} removed", added=what + " {key}={now} added",
                    changed=what + " {key}: {was} → {now}")
