"""The parser of ``lifeboat member replace``; its work is :mod:`lifeboat.cli.member`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lifeboat.cli.flags import add_command, add_etcd_flags, add_root_flag, positive_seconds


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
    from lifeboat.cli import member

    return member.cmd_replace(args)
