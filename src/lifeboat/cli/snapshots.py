"""``lifeboat snapshot save|status|check``: etcdctl/etcdutl-compatible snapshot files."""

from __future__ import annotations

import argparse
from pathlib import Path

from lifeboat.backup.pipeline import save_snapshot
from lifeboat.cli.connect import add_command, add_etcd_flags, add_root_flag, etcd_settings
from lifeboat.cli.output import Progress, emit_json, table
from lifeboat.etcd import EtcdClient
from lifeboat.snapshot import snapshot_status
from lifeboat.snapshot.check import check_snapshot


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    snap = sub.add_parser("snapshot", help="save or inspect raw etcd snapshot files",
                          description="Raw etcd snapshot files, compatible with etcdctl and etcdutl.")
    verbs = snap.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = add_command(verbs, common, "save", cmd_save)
    p.add_argument("file", type=Path, metavar="FILE")
    add_etcd_flags(p)
    add_root_flag(p)

    p = add_command(verbs, common, "status", cmd_status)
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("-w", "--write-out", choices=("table", "json"), dest="write_out",
                   help="output format, as etcdutl's -w (same as -o)")

    p = add_command(verbs, common, "check", cmd_check)
    p.add_argument("file", type=Path, metavar="FILE")


def cmd_save(args: argparse.Namespace) -> int:
    """save a raw snapshot file, like 'etcdctl snapshot save'

    Stream a snapshot from one healthy voting member into FILE, keeping etcd's sha256 trailer (so
    'etcdutl snapshot restore' can check it). The file appears only once complete and checked.
    """
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
    """print a snapshot file's hash, revision, keys and size

    Read a snapshot file offline and print the same hash, revision, total keys and total size as
    'etcdutl snapshot status'.
    """
    status = snapshot_status(args.file)
    if (args.write_out or args.output) == "json":
        emit_json(status.to_etcdutl_json())
    else:
        table(("HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"),
              [(f"{status.hash:x}", status.revision, status.total_key, status.total_size)])
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """check a db or snapshot file's structure page by page

    Check FILE (an etcd snapshot or a bbolt db such as member/snap/db) offline: every page below the
    high-water mark is in use exactly once or free, every bucket (nested ones too) can be read, keys
    are in order where lookups expect them, and the sha256 trailer matches if the file has one.
    Prints what is wrong and exits 1 if anything is; exits 0 for a sound file. It does not decode
    etcd's values: 'lifeboat snapshot status' and 'verify' do that.
    """
    result = check_snapshot(args.file)
    if args.output == "json":
        emit_json(result.to_json())
        return 0 if result.ok else 1
    if result.page_size is not None:
        table(("PAGES", "IN USE", "FREE", "FREELIST", "BUCKETS", "KEYS", "TRAILER"),
              [(result.high_water, result.pages_in_use, result.pages_free, result.freelist,
                result.buckets + result.nested_buckets, result.keys, result.trailer)])
    for problem in result.problems:
        print(f"problem: {problem}")
    print(f"{args.file}: " + ("sound" if result.ok else f"{len(result.problems)} problem(s) found"))
    return 0 if result.ok else 1
