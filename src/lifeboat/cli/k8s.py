"""``lifeboat k8s ls``, ``get``, ``diff``, ``undelete``: Kubernetes objects in backups and etcd."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

import yaml

from lifeboat.cli.k8s_source import encryption_config, open_source
from lifeboat.cli.output import emit_json, human_size, printable, table
from lifeboat.errors import NotFound, UsageError
from lifeboat.kube.inventory import (
    REGISTRY_PREFIX, Entry, KindQuery, ObjectSource, decode_entries, diff_keys, filter_changes, holds_kind,
    keys_in_namespace, StoredKeyValue, select, summarize, summarize_keys,
)
from lifeboat.kube.inventory.views import object_document, object_row
from lifeboat.kube.objects import EncryptionConfiguration, decode_value, parse_registry_key

def _kind(text: str | None) -> KindQuery | None:
    return KindQuery.parse(text) if text else None


def cmd_ls(args: argparse.Namespace) -> int:
    """inventory by namespace and resource, or the objects"""
    kind = _kind(args.kind)
    encryption = encryption_config(args)
    filtered = args.namespace is not None or kind is not None
    with ExitStack() as stack:
        source = open_source(args.source, args, stack)
        kvs = source.key_values()
        if filtered:
            if args.namespace is not None:
                kvs = keys_in_namespace(kvs, args.namespace)
            chosen = list(select(decode_entries(kvs, encryption), args.namespace, kind))
            summary, failed = summarize(chosen), [e for e in chosen if e.obj.error is not None]
            if not chosen and kind is not None:
                _check_kind_known(kind, [source], encryption)
        else:
            chosen = []
            summary, failed = summarize_keys(kvs, encryption)
        revision = source.revision()
        description = source.description
    total = sum(s.count for s in summary)
    errors = [{"key": e.kv.key.decode("utf-8", "replace"), "error": str(e.obj.error)} for e in failed]
    if args.output == "json":
        doc: dict[str, Any] = {"source": description, "revision": revision, "objects_total": total,
                               "summary": [vars(s) for s in summary], "errors": errors}
        if filtered:
            doc["objects"] = [object_row(e) for e in chosen]
        emit_json(doc)
        return 0
    print(f"{description}: {total} objects" + (f" at revision {revision}" if revision else ""))
    if filtered:
        _print_objects(chosen)
    else:
        table(("NAMESPACE", "RESOURCE", "COUNT", "SIZE", "NEWEST-MOD-REV", "ENCRYPTED", "ERRORS"),
              [(s.namespace or "-", s.resource, s.count, human_size(s.bytes), s.newest_mod_revision,
                s.encrypted, s.errors) for s in summary])
    for err in errors:
        print(printable(f"error: {err['key']}: {err['error']}"), file=sys.stderr)
    return 0


def _check_kind_known(kind: KindQuery, sources: list[ObjectSource],
                      encryption: EncryptionConfiguration | None, by_key_only: bool = False) -> None:
    """No object of ``kind`` is found: fine for a built-in resource; otherwise the kind is
    probably mistyped (or a custom resource the sources do not hold), which is said."""
    if kind.built_in or any(holds_kind(s.key_values(), kind, encryption, by_key_only) for s in sources):
        return
    if by_key_only and any(holds_kind(s.key_values(), kind, encryption) for s in sources):
        raise UsageError(f"--kind {kind.text!r} names a kind; diff matches keys by resource: give the "
                         "resource instead (its plural, e.g. widgets.example.com)")
    where = " nor ".join(s.description for s in sources)
    raise NotFound(f"kind {kind.text!r} is no built-in resource and no object of it is in {where}; "
                   "`lifeboat k8s ls SOURCE` lists the resources a source holds")


def _print_objects(entries: list[Entry]) -> None:
    rows = [(r["namespace"] or "-", r["resource"], r["name"], r["uid"] or "-", r["created"] or "-",
             r["mod_revision"], r["encoding"], r["encryption"] or "-")
            for r in map(object_row, entries)]
    table(("NAMESPACE", "RESOURCE", "NAME", "UID", "CREATED", "MOD-REV", "ENCODING", "ENCRYPTION"), rows)


def cmd_get(args: argparse.Namespace) -> int:
    """one object: metadata and stored bytes"""
    encryption = encryption_config(args)
    with ExitStack() as stack:
        source = open_source(args.source, args, stack)
        entry = _find_object(source.key_values(), args.object, args.namespace, encryption,
                             source.description)
    if args.output == "raw":
        if entry.is_secret and not args.show_secrets:
            raise UsageError("refusing to print a Secret's stored bytes; pass --show-secrets")
        sys.stdout.flush()
        sys.stdout.buffer.write(entry.kv.value)
        sys.stdout.buffer.flush()
        return 0
    doc = object_document(entry, show_secrets=args.show_secrets)
    if args.output == "json":
        emit_json(doc)
    elif args.output == "yaml":
        # Every character beyond ASCII escaped, as in -o json: a direction override or a
        # zero-width space in a name or annotation would otherwise reach the terminal as it is.
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    else:
        _print_object(doc)
    return 0


def _find_object(kvs: Iterable[StoredKeyValue], text: str, namespace: str | None,
                 encryption: EncryptionConfiguration | None, where: str) -> Entry:
    if text.startswith("/"):
        if not text.startswith(REGISTRY_PREFIX.decode()):
            raise UsageError(f"key {text!r} is outside /registry/, where kube-apiserver keeps objects")
        # As the command line gave it: a key that is not UTF-8 arrives with its bytes escaped.
        wanted = os.fsencode(text)
        matches = [kv for kv in kvs if kv.key == wanted]
        if not matches:
            raise NotFound(f"key {text} is not in {where}")
        return Entry(matches[0], decode_value(matches[0].key, matches[0].value, encryption))
    kind_text, sep, name = text.partition("/")
    if not sep or not name:
        raise UsageError(f"{text!r}: expected KIND/NAME, e.g. pod/web-0 or deployments.apps/web")
    kind = KindQuery.parse(kind_text)
    wanted_ns = namespace or "default"
    found: list[Entry] = []
    for kv in kvs:
        parsed = parse_registry_key(kv.key)
        if parsed is None or parsed.name != name or parsed.namespace not in (wanted_ns, None):
            continue
        entry = Entry(kv, decode_value(kv.key, kv.value, encryption))
        if kind.matches(parsed, entry.obj.kind):
            found.append(entry)
    if not found:
        raise NotFound(f"no {kind_text}/{name} in namespace {wanted_ns!r} (or cluster-wide) of {where}")
    if len(found) > 1:
        keys = ", ".join(e.kv.key.decode("utf-8", "replace") for e in found)
        raise UsageError(f"{text!r} matches several objects ({keys}); name one by its etcd key")
    return found[0]


def _print_object(doc: dict[str, Any]) -> None:
    for field in ("key", "resource", "namespace", "name", "apiVersion", "kind", "encoding",
                  "encryption", "create_revision", "mod_revision", "bytes", "error"):
        if doc.get(field) not in (None, ""):
            print(printable(f"{field + ':':<17}{doc[field]}"))
    if doc.get("metadata"):
        print("metadata:")
        print("  " + yaml.safe_dump(doc["metadata"], sort_keys=False).rstrip().replace("\n", "\n  "))
    if "object" in doc:
        print("object:")
        print("  " + yaml.safe_dump(doc["object"], sort_keys=False).rstrip().replace("\n", "\n  "))
    elif "value" in doc:
        print(f"value:           {doc['value']}")
    elif "object_not_shown" in doc:
        print(f"object:          (not shown: {doc['object_not_shown']})")
    else:
        print(f"value:           ({doc['encoding']}; use -o json/yaml for base64 or -o raw for the bytes)")


def cmd_diff(args: argparse.Namespace) -> int:
    """objects added, removed and changed between two sources"""
    kind = _kind(args.kind)
    with ExitStack() as stack:
        a = open_source(args.a, args, stack)
        b = open_source(args.b, args, stack)
        changes = list(filter_changes(diff_keys(a.key_values(), b.key_values()), args.namespace, kind))
        if not changes and kind is not None:
            _check_kind_known(kind, [a, b], None, by_key_only=True)
        names = (a.description, b.description)
    changes.sort(key=lambda c: (c.namespace or "", c.resource, c.name))
    counts = {t: sum(c.change == t for c in changes) for t in ("added", "removed", "changed")}
    if args.output == "json":
        emit_json({"a": names[0], "b": names[1], **counts, "changes": [
            {"change": c.change, "key": c.key.decode("utf-8", "replace"), "namespace": c.namespace,
             "resource": c.resource, "name": c.name, "a_mod_revision": c.a_mod_revision,
             "b_mod_revision": c.b_mod_revision} for c in changes]})
        return 0
    print(f"A: {names[0]}\nB: {names[1]}")
    table(("CHANGE", "NAMESPACE", "RESOURCE", "NAME", "A-MOD-REV", "B-MOD-REV"),
          [(c.change, c.namespace or "-", c.resource, c.name, c.a_mod_revision or "-",
            c.b_mod_revision or "-") for c in changes])
    print(f"{counts['added']} added, {counts['removed']} removed, {counts['changed']} changed")
    return 0
