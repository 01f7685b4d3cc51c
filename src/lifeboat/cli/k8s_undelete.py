"""``lifeboat k8s undelete``: write a namespace's objects back into the live etcd."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from typing import Any

from lifeboat.cli.k8s_source import LIVE, encryption_config, live_client, open_source
from lifeboat.cli.output import emit_json, printable, table
from lifeboat.errors import OperationFailed, UsageError
from lifeboat.etcd import EtcdClient
from lifeboat.kube.inventory import (
    REGISTRY_PREFIX, KindQuery, LiveEtcdSource, ObjectSource, UndeletePlan, UndeleteResult, UndeleteStep,
    decode_entries, execute_plan, plan_undelete, same_cluster,
)
from lifeboat.kube.inventory.listing import keys_in_namespace
from lifeboat.kube.objects import EncryptionConfiguration, decode_value

EXPECT = (
    "kube-apiserver sees the written keys through its etcd watch at once; no restart is needed",
    "controllers recreate the objects they own that were not written (ReplicaSets, Pods, "
    "EndpointSlices) and reconcile the rest",
    "restored Pods keep their node binding: the kubelet there starts them, and ones whose node "
    "is gone are replaced by their controller",
    "objects whose ownerReferences point to owners that do not exist are garbage-collected",
    "Events and other objects kept on etcd leases are not restored",
)


def cmd_undelete(args: argparse.Namespace) -> int:
    """write a namespace's objects back from a backup"""
    if args.source == LIVE:
        raise UsageError("--from must be a backup or a snapshot file, not the live cluster itself")
    kind = KindQuery.parse(args.kind) if args.kind else None
    encryption = encryption_config(args)
    with ExitStack() as stack:
        client, endpoints = live_client(args, stack)
        source = open_source(args.source, args, stack)
        _check_same_cluster(source, LiveEtcdSource(client, endpoints), args.force)
        _check_not_terminating(client, args.namespace, encryption)
        live_keys = {kv.key for kv in client.range_all(REGISTRY_PREFIX, prefix=True, keys_only=True)}
        entries = decode_entries(keys_in_namespace(source.key_values(), args.namespace), encryption)
        plan = plan_undelete(entries, live_keys, args.namespace, kind=kind, name=args.name,
                             source_name=source.description, live_encryption=encryption)
        result = execute_plan(plan, client.put_if_absent) if args.apply else None
        _report(args, source.description, plan, result)
    return 0


def _check_same_cluster(source: ObjectSource, live: LiveEtcdSource, force: bool) -> None:
    theirs, ours = source.identity(), live.identity()
    if same_cluster(theirs, ours) or force:
        return
    raise OperationFailed(
        f"{source.description} is from {theirs.describe()}, but the live etcd is "
        f"{ours.describe()}; refusing to write another cluster's objects (pass --force if this "
        "cluster was restored from a snapshot and so got a new id)"
    )


def _check_not_terminating(client: EtcdClient, namespace: str,
                           encryption: EncryptionConfiguration | None) -> None:
    key = os.fsencode(f"/registry/namespaces/{namespace}")
    kv = client.get(key)
    if kv is None:
        return
    meta = decode_value(key, kv.value, encryption).metadata
    if meta is not None and meta.deletion_timestamp is not None:
        raise OperationFailed(
            f"namespace {namespace!r} is being deleted in the live cluster; objects written now "
            "would be deleted with it: wait until it is gone, then run undelete again"
        )


def _step_doc(step: UndeleteStep) -> dict[str, Any]:
    e = step.entry
    return {"action": step.action, "key": e.kv.key.decode("utf-8", "replace"),
            "resource": e.resource, "name": e.name, "kind": e.obj.kind,
            "mod_revision": e.kv.mod_revision, "bytes": len(e.kv.value),
            "reason": step.reason or None, "notes": list(step.notes)}


def _report(args: argparse.Namespace, source: str, plan: UndeletePlan,
            result: UndeleteResult | None) -> None:
    if args.output == "json":
        emit_json({
            "source": source, "namespace": plan.namespace, "applied": result is not None,
            "steps": [_step_doc(s) for s in plan.steps],
            "written": [s.entry.kv.key.decode("utf-8", "replace") for s in result.written] if result else [],
            "skipped_at_write": [_step_doc(s) for s in result.skipped] if result else [],
            "expect": list(EXPECT) if result else [],
        })
        return
    print(f"undelete namespace {plan.namespace} from {source}:")
    rows = []
    for s in plan.steps:
        detail = "; ".join(([s.reason] if s.reason else []) + list(s.notes))
        rows.append((s.action, s.entry.resource, s.entry.name, s.entry.kv.mod_revision, detail))
    table(("ACTION", "RESOURCE", "NAME", "MOD-REV", "REASON / NOTES"), rows)
    unchecked = sum(s.entry.obj.encryption is not None for s in plan.writes) if args.encryption_config is None else 0
    if unchecked:
        print(f"warning: {unchecked} of the objects to write are encrypted at rest; without --encryption-config "
              "(the live kube-apiserver's) lifeboat cannot check that kube-apiserver holds their keys",
              file=sys.stderr)
    if result is None:
        print(f"dry run: nothing written; {len(plan.writes)} objects would be written, "
              f"{len(plan.skips)} skipped. Run again with --apply to write them.")
        return
    for s in result.skipped:
        print(printable(f"skipped {s.entry.kv.key.decode('utf-8', 'replace')}: {s.reason}"))
    print(f"wrote {len(result.written)} objects; skipped {len(plan.skips) + len(result.skipped)}.")
    print("what to expect:")
    for line in EXPECT:
        print(f"  - {line}")
