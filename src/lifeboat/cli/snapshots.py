"""``lifeboat snapshot save`` and ``lifeboat snapshot status``: etcdctl/etcdutl-compatible files."""

from __future__ import annotations

import argparse
from pathlib import Path

from lifeboat.backup.pipeline import save_snapshot
from lifeboat.cli.connect import add_etcd_flags, add_root_flag, etcd_settings
from lifeboat.cli.output import Progress, emit_json, table
from lifeboat.etcd import EtcdClient
from lifeboat.snapshot import snapshot_status


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    snap = sub.add_parser("snapshot", help="save or inspect raw etcd snapshot files",
                          description="Raw etcd snapshot files, compatible with etcdctl and etcdutl.")
    verbs = snap.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser(
        "save", parents=[common], help="save a raw snapshot file, like 'etcdctl snapshot save'",
        description="Stream a snapshot from one healthy voting member into FILE, keeping etcd's "
        "sha256 trailer (so 'etcdutl snapshot restore' can check it). The file appears only once "
        "complete and checked.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    add_etcd_flags(p)
    add_root_flag(p)
    p.set_defaults(func=cmd_save)

    p = verbs.add_parser(
        "status", parents=[common], help="print a snapshot file's hash, revision, keys and size",
        description="Read a snapshot file offline and print the same hash, revision, total keys "
        "and total size as 'etcdutl snapshot status'.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("-w", "--write-out", choices=("table", "json"), dest="write_out",
                   help="output format, as etcdutl's -w (same as -o)")
    p.set_defaults(func=cmd_status)


def cmd_save(args: argparse.Namespace) -> int:
    resolved = etcd_settings(args)
    progress = Progress()
    with EtcdClient(resolved.settings) as etcd:
        source, size = save_snapshot(etcd, resolved.settings.endpoints, args.file, progress)
    progress.finish()
    if args.output == "json":
        emit_json({"path": str(args.file), "size": size, "member": source.member.name,
                   "endpoint": source.endpoint, "etcd_version": source.status.version})
    else:
        print(f"Snapshot saved at {args.file} ({size} bytes from {source.member.name} at {source.endpoint})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = snapshot_status(args.file)
    if (args.write_out or args.output) == "json":
        emit_json(status.to_etcdutl_json())
    else:
        table(("HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"),
              [(f"{status.hash:x}", status.revision, status.total_key, status.total_size)])
    return 0
