"""The parser of ``lifeboat restore``; the restore itself is :mod:`lifeboat.cli.restore`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lifeboat.cli.flags import (
    add_command, add_etcd_flags, add_identity_flag, add_point_flags, add_repo_flags, add_root_flag,
    positive_seconds, whole_number,
)
from lifeboat.cli.writer import add_writer_flags


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "restore", cmd_restore, raw=True)
    p.add_argument("backup_id", metavar="ID", nargs="?",
                   help="a backup id or 'latest'; or 'plan' followed by an ID for a whole cluster; with "
                        "--to-revision/--to-time, the base to replay from (default: the newest before the point)")
    p.add_argument("plan_backup_id", metavar="PLAN_ID", nargs="?", help=argparse.SUPPRESS)
    add_repo_flags(p)
    add_root_flag(p)
    add_etcd_flags(p)
    g = p.add_argument_group("the member to restore (etcdutl's flags; default: the etcd static pod under --root)")
    g.add_argument("--name", help="this member's name")
    g.add_argument("--initial-cluster", metavar="NAME=URL,...", help="every member of the restored cluster")
    g.add_argument("--initial-cluster-token", metavar="TOKEN",
                   help="the restored cluster's token (default: a fresh one; the same on every member)")
    g.add_argument("--initial-advertise-peer-urls", metavar="URLS", help="this member's peer URLs")
    g.add_argument("--data-dir", type=Path, metavar="DIR", help="etcd's data dir on this node (a host path)")
    p.add_argument("--supervisor", choices=("kubeadm", "systemd", "none"),
                   help="what stops and starts etcd: kubeadm static pods (default when etcd.yaml is found), "
                        "systemd units, or none (you stop and start it)")
    p.add_argument("--etcd-unit", default="etcd", metavar="UNIT", help="systemd unit of etcd (default etcd)")
    p.add_argument("--apiserver-unit", metavar="UNIT", help="systemd unit of kube-apiserver, if it has one")
    add_identity_flag(p, "encrypted backups and segments")
    p.add_argument("--files", action="store_true",
                   help="also put back the control-plane files (PKI, kubeconfigs, manifests), old ones moved aside")
    add_writer_flags(p, data_dirs="the restored data dir", beside="etcd")
    p.add_argument("--bump-revision", type=whole_number, metavar="N",
                   help="raise the restored revision by N and compact there (default 1000000000; 0: "
                        "no bump); lifeboat's writer does it as it writes the data dir; with --restore-with "
                        "tool, the tool if it can, else lifeboat after it")
    p.add_argument("--wait-timeout", type=positive_seconds, default=300.0, metavar="SECONDS",
                   help="how long to wait for the restored member to serve (default 300)")
    p.add_argument("--no-auto-rollback", action="store_true",
                   help="if the restored single member fails to start, leave it for inspection (as "
                        "--supervisor none always does: it cannot stop the etcd you started)")
    p.add_argument("--force", action="store_true",
                   help="restore even though this node's live member or data dir belongs to another etcd "
                        "cluster than the backup's, or that cluster still has quorum (refused without it); "
                        "restore again a restore that already finished (it changes nothing without it)")
    add_point_flags(p)
    p.add_argument("--no-start", action="store_true",
                   help="stop once the restored data dir is in place: leave etcd (and kube-apiserver) stopped, "
                        "exit 0 and print how to start and check it; for scripts restoring every member first")
    p.add_argument("--dry-run", action="store_true",
                   help="check the node as the first step would (data dir, room, restore tool), print the plan and "
                        "change nothing (the backup and segments are not fetched: a damaged backup or "
                        "capture segment shows only in a real run, or in 'lifeboat verify --drill')")
    p.add_argument("--rollback", action="store_true",
                   help="put the data dir the last restore moved aside back in place and start etcd (no backup "
                        "id, --files, --force or point flags: it restores no backup)")


def cmd_restore(args: argparse.Namespace) -> int:
    """restore this node's etcd member from a backup

    Rebuild this node's etcd member from a backup, in journaled steps: fetch and verify the backup
    (a bad one stops here, node untouched), stop kube-apiserver and etcd, move the old data dir
    aside to <data-dir>.lifeboat-moved-<UTC stamp> (never deleted), write the restored data dir
    (what etcdutl/etcdctl snapshot restore writes, by lifeboat itself for etcd 3.4 and 3.5 unless
    --restore-with tool), compare its keys with the backup's offline, optionally put the
    control-plane files back (--files), start etcd, check that it serves
    the backup's keys at the bumped revision, start kube-apiserver. --dry-run prints exactly these
    steps. Re-running the same command after a crash resumes; once the restore finished, it says so
    and changes nothing (--force restores again); --rollback puts the old data dir back.
    --no-start stops once the restored data dir is in place and prints how to start etcd.

    The restored revision is raised by a billion (--bump-revision N to choose, 0 for none) and
    compacted there, so Kubernetes watch caches and informers relist instead of missing changes:
    by lifeboat's own writer as it writes the data dir (the rows 3.5.10+'s --bump-revision
    --mark-compacted writes); with --restore-with tool, by the tool's --bump-revision
    --mark-compacted (etcdutl 3.5.10+, etcdctl 3.4.27+), or by lifeboat on the restored db for
    older tools. The plan says which.

    A backup of another etcd cluster than this node's (by the live member's cluster id, else the
    member ids in the data dir's db) is refused unless --force. In a repository of several
    clusters, 'latest' needs --cluster.

    While the backup's etcd cluster keeps quorum with more than one voting member, a restore is
    refused (exit 1) with the 'lifeboat member replace' command to run instead: it would roll the
    working cluster back. lifeboat asks the etcd endpoints given (default: this node's member), the
    member the backup was taken from, the members this node's data dir records (at their peer
    hosts, on this member's client port, as kubeadm lays them out) and every member they list; when
    this node's etcd is down and the others serve elsewhere, give --endpoints=THIS,OTHER,... (this
    node's member first: it is the one stopped, restored and checked).
    --force restores anyway. A cluster that lost quorum, one where nothing answers (e.g. every
    member stopped to be restored) and members already restored (a new cluster id) do not stop it.

    With --to-revision R or --to-time T (and no ID, or the base's), the newest base backup at or
    before the point is fetched and the events 'lifeboat capture' stored after it are replayed
    offline into the snapshot, so the member holds exactly the cluster's state at R; a point before
    the oldest backup, inside a gap or not yet captured is refused naming the nearest restorable
    points, and a missing or damaged segment is refused, never skipped.

    For a cluster of several members, 'lifeboat restore plan ID --initial-cluster ...' prints the
    command to run on each member's node.
    """
    from lifeboat.cli import restore

    return restore.cmd_restore(args)
