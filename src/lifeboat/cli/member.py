"""``lifeboat member replace NAME``: rebuild one failed member of a cluster that kept quorum."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lifeboat.cli.connect import add_command, add_etcd_flags, add_root_flag, etcd_settings, positive_seconds
from lifeboat.cli.output import emit_json
from lifeboat.clock import SystemClock
from lifeboat.errors import UsageError
from lifeboat.etcd import EtcdClient
from lifeboat.kube.static_pods import etcd_endpoint_from_manifest
from lifeboat.recovery.health import read_cluster_health
from lifeboat.recovery.member_replace import (
    CommandStarter, MemberStarter, OperatorStarter, plan_replacement, replace_member,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    member = sub.add_parser("member", help="change etcd's membership (replace a failed member)",
                            description="Change the membership of the etcd cluster.")
    verbs = member.add_subparsers(dest="member_command", required=True, metavar="VERB")
    p = add_command(verbs, common, "replace", cmd_replace, raw=True)
    p.add_argument("name", metavar="NAME", help="the member's name (or its hex id)")
    add_etcd_flags(p)
    add_root_flag(p)
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="the member's data dir on this host, moved aside before it restarts "
                        "(default: from the kubeadm etcd manifest when it names NAME)")
    p.add_argument("--peer-urls", metavar="URLS",
                   help="peer URLs to add the member back with (default: the ones it had); "
                        "needed when it was already removed")
    p.add_argument("--start-command", metavar="SHELL",
                   help="shell command that starts etcd for NAME and returns, e.g. 'systemctl start "
                        "etcd'; without it lifeboat prints the flags and waits for you to start it")
    p.add_argument("--timeout", type=positive_seconds, default=300, metavar="SECONDS",
                   help="how long to wait for the member to start and to catch up (default 300)")
    p.add_argument("--force", action="store_true", help="replace the member even though it is healthy")
    p.add_argument("--dry-run", action="store_true", help="print the steps and change nothing")


def cmd_replace(args: argparse.Namespace) -> int:
    """replace a failed member: remove, re-add as learner, start, promote

    Replace a failed member of an etcd cluster that still has quorum, instead of restoring:

      1. remove the member (MemberRemove)
      2. move its data dir aside to <data-dir>.lifeboat-moved-<UTC stamp> (never deleted), when
         the data dir is on this host (--data-dir, or the kubeadm etcd manifest under --root
         when its --name is NAME)
      3. add it back as a learner with the same peer URLs (or --peer-urls)
      4. start it with --initial-cluster-state=existing and the new --initial-cluster: by
         running --start-command (with LIFEBOAT_NAME, LIFEBOAT_INITIAL_CLUSTER,
         LIFEBOAT_INITIAL_ADVERTISE_PEER_URLS, LIFEBOAT_INITIAL_CLUSTER_STATE=existing and
         LIFEBOAT_ETCD_FLAGS, all four as flags, set), or by you, with the flags printed;
         lifeboat waits until it answers
      5. wait until it has caught up with the leader, then promote it (MemberPromote)

    Refused when the member is healthy (unless --force), when removing it would lose quorum, or
    when quorum is already lost (then restore every member: see 'lifeboat status'). Re-running
    after an interruption resumes: a running learner is only promoted.
    """
    if args.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    resolved = etcd_settings(args)
    endpoints = resolved.settings.endpoints
    data_dir = args.data_dir or _local_data_dir(args.root, args.name)
    peer_urls = tuple(u for u in (args.peer_urls or "").split(",") if u)
    starter: MemberStarter = CommandStarter(args.start_command) if args.start_command else OperatorStarter()
    clock = SystemClock()
    with EtcdClient(resolved.settings) as etcd:
        health = read_cluster_health(etcd, endpoints)
        plan = plan_replacement(
            health, args.name, now=clock.now(), starter=starter, peer_urls=peer_urls,
            data_dir=data_dir, data_dir_exists=data_dir is not None and data_dir.exists(), force=args.force,
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
