"""``lifeboat member replace NAME``: rebuild one failed member of a cluster that kept quorum."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lifeboat.cli.connect import etcd_settings, host_root
from lifeboat.cli.output import emit_json
from lifeboat.clock import SystemClock
from lifeboat.errors import UsageError
from lifeboat.restore.target import checked_peer_url
from lifeboat.etcd import EtcdClient
from lifeboat.etcd.data_dir import unused_stamp, utc_stamp
from lifeboat.kube.static_pods import etcd_endpoint_from_manifest
from lifeboat.recovery.health import read_cluster_health
from lifeboat.recovery.member_replace import (
    CommandStarter, MemberStarter, OperatorStarter, plan_replacement, replace_member,
)


def cmd_replace(args: argparse.Namespace) -> int:
    """replace a failed member: remove, re-add as learner, start, promote"""
    if args.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    resolved = etcd_settings(args)
    endpoints = resolved.settings.endpoints
    data_dir = args.data_dir or _local_data_dir(host_root(args), args.name)
    # Checked as restore checks them (scheme, host and port only; no user or password), before etcd sees them.
    peer_urls = tuple(checked_peer_url(u.strip(), "--peer-urls") for u in (args.peer_urls or "").split(",") if u.strip())
    starter: MemberStarter = CommandStarter(args.start_command) if args.start_command else OperatorStarter()
    clock = SystemClock()
    with EtcdClient(resolved.settings) as etcd:
        health = read_cluster_health(etcd, endpoints)
        now = clock.now()
        plan = plan_replacement(
            health, args.name, stamp=unused_stamp(now, data_dir) if data_dir else utc_stamp(now), starter=starter,
            peer_urls=peer_urls, data_dir=data_dir, data_dir_exists=data_dir is not None and data_dir.exists(),
            force=args.force,
        )
        if args.dry_run:
            if args.output == "json":
                emit_json({"member": plan.name, "steps": [s.description for s in plan.steps],
                           "notes": list(plan.notes), "data_dir": plan.data_dir, "moved_to": plan.moved_to})
            else:
                print(f"replacing member {plan.name} would:")
                for line in plan.describe():
                    print(f"  {line}")
            return 0
        # With -o json, stdout carries only the JSON document; the steps go to stderr.
        out = sys.stderr if args.output == "json" else sys.stdout
        for note in plan.notes:
            print(f"note: {note}", file=out, flush=True)
        result = replace_member(etcd, plan, starter, endpoints, timeout=args.timeout, clock=clock,
                                report=lambda line: print(line, file=out, flush=True))
    if args.output == "json":
        emit_json({"member": plan.name, "member_id": f"{result.member_id:x}", "moved_to": result.moved_to,
                   "summary": result.health.summary()})
    else:
        moved = f"; its old data is kept at {result.moved_to}" if result.moved_to else ""
        print(f"member {plan.name} replaced as {result.member_id:x}{moved}")
    return 0


def _local_data_dir(root: Path, name: str) -> Path | None:
    """The data dir of ``name`` when this host's kubeadm etcd manifest is that member's."""
    found = etcd_endpoint_from_manifest(root)
    if found is None or found.name != name:
        return None
    return found.data_dir
