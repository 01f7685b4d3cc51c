"""``lifeboat k8s history KIND/NAME``: every version of one object in the retained timeline."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timezone
from typing import Any

from lifeboat.catalog.timeline import TimelineGap
from lifeboat.cli.capture import gap_json
from lifeboat.cli.connect import age_identities, cluster_name, open_repository, temp_dir
from lifeboat.cli.output import emit_json, printable, table
from lifeboat.cli.point import only_cluster
from lifeboat.errors import NotFound, UsageError
from lifeboat.kube.inventory.history import describe_change
from lifeboat.kube.inventory.kinds import KindQuery
from lifeboat.kube.objects import EncryptionConfiguration, load_encryption_configuration
from lifeboat.kube.inventory.source import REGISTRY_PREFIX
from lifeboat.kube.objects.keys import parse_registry_key
from lifeboat.kube.objects.stored import StoredObject, decode_value
from lifeboat.pitr.history import KeyMatch, ObjectVersion, object_history


def object_matcher(text: str, namespace: str | None, encryption: EncryptionConfiguration | None) -> KeyMatch:
    """Which stored keys are ``KIND/NAME`` (or the etcd key itself)."""
    if text.startswith("/"):
        if not text.startswith(REGISTRY_PREFIX.decode()):
            raise UsageError(f"key {text!r} is outside /registry/, where kube-apiserver keeps objects")
        wanted = os.fsencode(text)  # a key that is not UTF-8 comes with its bytes escaped
        return lambda key, value: key == wanted
    kind_text, sep, name = text.partition("/")
    if not sep or not name:
        raise UsageError(f"{text!r}: expected KIND/NAME, e.g. pod/web-0 or deployments.apps/web")
    kind = KindQuery.parse(kind_text)
    wanted_ns = namespace or "default"

    def matches(key: bytes, value: bytes) -> bool:
        parsed = parse_registry_key(key)
        if parsed is None or parsed.name != name or parsed.namespace not in (wanted_ns, None):
            return False
        return kind.matches(parsed, decode_value(key, value, encryption).kind)

    return matches


def cmd_history(args: argparse.Namespace) -> int:
    """every version of one object in the captured timeline"""
    encryption = load_encryption_configuration(args.encryption_config) if args.encryption_config else None
    matches = object_matcher(args.object, args.namespace, encryption)
    repo = open_repository(args)
    cluster = cluster_name(args, default=None) or only_cluster(repo)
    history = object_history(repo, cluster, matches, age_identities(args), temp_dir(args))
    if not history.versions:
        unknown = "".join(f"; {_unknown(gap)} ({gap.reason})" for gap in history.gaps)
        raise NotFound(f"{args.object} never appears in the captured timeline of cluster {cluster} "
                       f"(see 'lifeboat timeline'){unknown}")
    rows = list(_rows(history.versions, encryption))
    if args.output == "json":
        emit_json({"object": args.object, "cluster": cluster, "versions": rows,
                   "gaps": [gap_json(g) for g in history.gaps]})
    else:
        table(("REVISION", "SEEN", "KEY", "VERSION", "SOURCE", "CHANGES"),
              [(r["revision"], r["seen"] or "(in base)", r["key"], r["version"] if r["version"] is not None else "-",
                r["source"], "; ".join(r["changes"])) for r in rows])
    # The object may have changed where the timeline has a gap: said, not left out in silence;
    # segments missing from the repository are damage, which fails the command (exit 1).
    for gap in history.gaps:
        print(printable(f"lifeboat: the history is incomplete: {_unknown(gap)} ({gap.reason})"), file=sys.stderr)
    return 1 if any(gap.missing for gap in history.gaps) else 0


def _unknown(gap: TimelineGap) -> str:
    if gap.before_revision is None:
        return f"nothing is known after revision {gap.after_revision}"
    return f"nothing is known of revisions {gap.after_revision + 1}..{gap.before_revision - 1}"


def _rows(versions: list[ObjectVersion], encryption: EncryptionConfiguration | None) -> list[dict[str, Any]]:
    previous: dict[bytes, StoredObject | None] = {}
    rows = []
    for v in versions:
        current = decode_value(v.key, v.kv.value, encryption) if v.kv is not None else None
        before = previous.get(v.key)
        changes = describe_change(before, current) if v.seen is not None or before is not None else (
            ("as held by the base backup",))
        previous[v.key] = current
        rows.append({
            "revision": v.revision, "key": v.key.decode("utf-8", "replace"),
            "seen": v.seen.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            if v.seen else None,
            "source": v.source, "change": "delete" if v.kv is None else "put",
            "version": v.kv.version if v.kv else None, "size": len(v.kv.value) if v.kv else 0,
            "changes": list(changes),
        })
    return rows
