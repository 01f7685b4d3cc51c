"""``lifeboat snapshot save|status|check``: etcdctl/etcdutl-compatible snapshot files."""

from __future__ import annotations

import argparse
from pathlib import Path

from lifeboat.backup.pipeline import save_snapshot
from lifeboat.cli.connect import etcd_settings
from lifeboat.cli.output import Progress, emit_json, table
from lifeboat.errors import UsageError
from lifeboat.etcd import EtcdClient
from lifeboat.snapshot import snapshot_status
from lifeboat.snapshot.check import check_snapshot


def cmd_save(args: argparse.Namespace) -> int:
    """save a raw snapshot file, like 'etcdctl snapshot save'"""
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
    """print a snapshot file's hash, revision, keys and size"""
    status = snapshot_status(_named(args.file))
    if (args.write_out or args.output) == "json":
        emit_json(status.to_etcdutl_json())
    else:
        table(("HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"),
              [(f"{status.hash:x}", status.revision, status.total_key, status.total_size)])
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """check a db or snapshot file's structure page by page"""
    result = check_snapshot(_named(args.file))
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


def _named(path: Path) -> Path:
    """The snapshot file given on the command line; nothing there is a usage error, as a directory is."""
    if not path.exists():
        raise UsageError(f"snapshot file {path} does not exist; check the path")
    return path
