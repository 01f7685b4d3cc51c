"""Plain data (for JSON, YAML and tables) describing stored objects; never secret values."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from lifeboat.kube.inventory.listing import Entry
from lifeboat.kube.objects import ObjectMeta

REDACTED = "<redacted: pass --show-secrets>"
# kubectl apply keeps the whole applied object, Secret data included, in the annotation
# kubectl.kubernetes.io/last-applied-configuration; any other annotation of a Secret may hold
# secret material too, so a Secret's annotation values are all redacted (their names are kept).


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def encryption_text(entry: Entry) -> str | None:
    info = entry.obj.encryption
    if info is None:
        return None
    return f"{info.provider}:{info.key_name}"


def object_row(entry: Entry) -> dict[str, Any]:
    """One object of ``k8s ls``: identity, age and how it is stored."""
    meta = entry.obj.metadata
    return {
        "namespace": entry.namespace,
        "resource": entry.resource,
        "kind": entry.obj.kind,
        "name": entry.name,
        "uid": meta.uid if meta else None,
        "created": _time(meta.creation_timestamp) if meta else None,
        "create_revision": entry.kv.create_revision,
        "mod_revision": entry.kv.mod_revision,
        "encoding": entry.obj.encoding,
        "encryption": encryption_text(entry),
        "bytes": len(entry.kv.value),
        "error": str(entry.obj.error) if entry.obj.error else None,
    }


def metadata_document(meta: ObjectMeta, redact_annotations: bool) -> dict[str, Any]:
    annotations = {k: REDACTED for k in meta.annotations} if redact_annotations else dict(meta.annotations)
    return {
        "name": meta.name,
        "generateName": meta.generate_name or None,
        "namespace": meta.namespace or None,
        "uid": meta.uid,
        "resourceVersion": meta.resource_version or None,
        "generation": meta.generation,
        "creationTimestamp": _time(meta.creation_timestamp),
        "deletionTimestamp": _time(meta.deletion_timestamp),
        "labels": dict(meta.labels),
        "annotations": annotations,
        "ownerReferences": [
            {"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid,
             "controller": o.controller}
            for o in meta.owner_references
        ],
        "finalizers": list(meta.finalizers),
        "managedFieldsEntries": meta.managed_fields_count,
    }


def object_document(entry: Entry, show_secrets: bool = False) -> dict[str, Any]:
    """One object of ``k8s get``: JSON-stored ones in full, others as metadata plus bytes."""
    hide = entry.is_secret and not show_secrets
    obj = entry.obj
    doc: dict[str, Any] = {
        "key": entry.kv.key.decode("utf-8", "replace"),
        "resource": entry.resource,
        "namespace": entry.namespace,
        "name": entry.name,
        "apiVersion": obj.api_version,
        "kind": obj.kind,
        "encoding": obj.encoding,
        "encryption": encryption_text(entry),
        "create_revision": entry.kv.create_revision,
        "mod_revision": entry.kv.mod_revision,
        "lease": entry.kv.lease,
        "bytes": len(entry.kv.value),
        "error": str(obj.error) if obj.error else None,
        "metadata": metadata_document(obj.metadata, hide) if obj.metadata else None,
    }
    plain = obj.plaintext if obj.plaintext is not None else obj.raw
    full = json.loads(plain) if obj.encoding == "json" and obj.error is None else None
    if full is not None and _nesting(full) > MAX_SHOWN_NESTING:
        doc["object_not_shown"] = (f"nested more than {MAX_SHOWN_NESTING} levels deep; "
                                   "use -o raw for the stored bytes")
    if full is not None and "object_not_shown" not in doc:
        doc["object"] = _redact_json_secret(full) if hide else full
    elif hide:
        doc["value"] = REDACTED
    else:
        doc["value_base64"] = base64.b64encode(obj.raw).decode()
        if obj.plaintext is not None:
            doc["decrypted_base64"] = base64.b64encode(obj.plaintext).decode()
    return doc


# How deep a JSON object may nest to be shown as a document: YAML output of one a few hundred
# levels deep exhausts Python's recursion limit (kube-apiserver accepts up to 10,000 levels).
MAX_SHOWN_NESTING = 100


def _nesting(doc: Any) -> int:
    """How many levels of objects and lists ``doc`` nests, counted without recursion."""
    depth, level = 0, [doc]
    while level:
        depth += 1
        level = [child for value in level if isinstance(value, (dict, list))
                 for child in (value.values() if isinstance(value, dict) else value)]
    return depth - 1


def secret_field_shown(path: str) -> bool:
    """Whether a JSON Secret's field at ``path`` (``data.password``, ``metadata.labels.app``) may
    be shown: only its type and the parts of its metadata that hold no values of its own (never
    an annotation's value)."""
    top, _, rest = path.partition(".")
    if top == "metadata":
        return rest.partition(".")[0] in _SECRET_PLAIN_METADATA
    return path in _SECRET_PLAIN_FIELDS


# A Secret's fields that hold no secret value. Any other field is redacted whatever its shape:
# a value written straight into etcd need not follow the Secret schema.
_SECRET_PLAIN_FIELDS = ("apiVersion", "kind", "type", "immutable")
# The members of a Secret's metadata shown as they are; annotations keep their names only, and
# anything else (managedFields included: a value written straight into etcd may put anything
# there) is redacted.
_SECRET_PLAIN_METADATA = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
                          "generation", "creationTimestamp", "deletionTimestamp",
                          "deletionGracePeriodSeconds", "labels", "ownerReferences", "finalizers")


def _redact_json_secret(doc: Any) -> Any:
    if not isinstance(doc, dict):
        return REDACTED
    out: dict[str, Any] = {}
    for name, value in doc.items():
        if name == "metadata" or (name in _SECRET_PLAIN_FIELDS and not isinstance(value, (dict, list))):
            out[name] = value
        elif name in ("data", "stringData") and isinstance(value, dict):
            out[name] = {k: REDACTED for k in value}
        else:
            out[name] = REDACTED
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = {name: _redact_secret_metadata(name, value) for name, value in out["metadata"].items()}
    elif "metadata" in out:
        out["metadata"] = REDACTED
    return out


def _redact_secret_metadata(name: str, value: Any) -> Any:
    if name == "annotations" and isinstance(value, dict):
        return {k: REDACTED for k in value}
    return value if name in _SECRET_PLAIN_METADATA else REDACTED
