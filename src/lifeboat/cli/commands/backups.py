"""The parsers of ``lifeboat backup``, ``list``, ``show``, ``verify`` and ``delete``; their work is
:mod:`lifeboat.cli.backups`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lifeboat.cli.flags import (
    add_cache_flags, add_command, add_drill_flags, add_etcd_flags, add_identity_flag, add_point_flags,
    add_repo_flags, add_root_flag, add_tmp_dir_flag, recipient_arg,
)
from lifeboat.config.rules import DEFAULT_ZSTD_LEVEL


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "backup", cmd_backup, add_etcd_flags, add_repo_flags, add_root_flag)
    p.add_argument("--encrypt-to", metavar="RECIPIENT", action="append", default=[], type=recipient_arg,
                   help="age recipient (age1...), SSH public key, or a file of them; repeatable")
    p.add_argument("--no-files", action="store_true", help="back up etcd only, not the control-plane files")
    p.add_argument("--zstd-level", type=int, metavar="N",
                   help=f"zstd level 1-19 (default {DEFAULT_ZSTD_LEVEL})")
    add_tmp_dir_flag(p, "where the snapshot is spooled while it is checked (needs the db's size free, as "
                     "the member reports it; printed and checked before streaming starts, exit 5 if short)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label recorded in the manifest; repeatable")

    p = add_command(sub, common, "list", cmd_list, add_repo_flags)
    p.add_argument("--last", type=_count, metavar="N", help="only the newest N backups")
    p.add_argument("--since", metavar="TIME", help="only backups started since TIME: an RFC 3339 "
                   "time or date (2026-11-22T03:00:00Z, 2026-11-22) or an age (36h, 7d, 2w)")
    p.add_argument("--check", action="store_true",
                   help="check that every backup's objects exist with their recorded sizes")
    add_cache_flags(p)

    p = add_command(sub, common, "show", cmd_show)
    p.add_argument("backup_id", metavar="ID", help="a backup id, or 'latest'")
    add_repo_flags(p)

    p = add_command(sub, common, "verify", cmd_verify)
    p.add_argument("backup_id", metavar="ID", nargs="?",
                   help="a backup id, or 'latest' (with --to-revision/--to-time: optional, the base to "
                        "replay from; default: the newest before the point)")
    add_repo_flags(p)
    add_identity_flag(p, "encrypted backups and segments")
    add_tmp_dir_flag(p, "where the snapshot is unpacked while checked (needs its raw size free, a drill twice "
                     "that and 64 MB, a point's drill three times; printed and checked before anything is "
                     "downloaded, exit 5 if short)")
    p.add_argument("--save-snapshot", type=Path, metavar="FILE",
                   help="also keep the verified raw snapshot (with etcd's trailer) at FILE: written as "
                   "FILE.part and renamed to FILE (fsynced) only once every check passed; with "
                   "--to-revision/--to-time (no --drill), the point's snapshot, for etcdutl snapshot restore")
    add_drill_flags(p)
    add_point_flags(p)

    p = add_command(sub, common, "delete", cmd_delete)
    p.add_argument("backup_id", metavar="ID", help="a backup id (not 'latest': a deletion names its backup)")
    add_repo_flags(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true", help="delete the backup even if it is pinned, or the newest "
                   "base of a capture chain that may still be written (which leaves that chain nothing to "
                   "be restored from)")


def cmd_backup(args: argparse.Namespace) -> int:
    """take a verified backup of etcd and the control-plane files

    Stream a snapshot from one healthy voting etcd member, check etcd's sha256 trailer, compress
    (zstd), optionally encrypt (age), upload, and capture the control-plane files (PKI, kubeconfigs,
    static-pod manifests, kubelet config, encryption config). The manifest is written last: an
    interrupted backup never looks complete.
    """
    from lifeboat.cli import backups

    return backups.cmd_backup(args)


def cmd_list(args: argparse.Namespace) -> int:
    """list the backups in a repository

    List committed backups, oldest first, a page at a time (each page is printed as soon as its
    manifests are read). --last and --since read only the manifests they show, and list only the
    keys of recent backups (--last N: the last 2 days', wider only when they hold fewer than N).
    Which backups exist is always read from the repository; a manifest already read (same key,
    size and version) is taken from a private local cache instead of downloaded again (--no-cache
    to skip it). With
    --check, also ask the store whether every object of each backup shown is there with its recorded
    size (one HEAD per object, no download; exit 1 if any is not).
    """
    from lifeboat.cli import backups

    return backups.cmd_list(args)


def cmd_show(args: argparse.Namespace) -> int:
    """show one backup's manifest

    Show what a backup holds: source member, snapshot status, objects and their checksums, captured
    files.
    """
    from lifeboat.cli import backups

    return backups.cmd_show(args)


def cmd_verify(args: argparse.Namespace) -> int:
    """fetch a backup and check every checksum and the snapshot

    Download every object, check its stored sha256, decrypt, decompress, check the raw sha256 and
    etcd's trailer, read the snapshot offline and compare revision, hash, key count and size with
    the manifest, and check every control-plane file's sha256. Exit 1 if anything does not match.
    With --to-revision/--to-time and --save-snapshot FILE, build the snapshot at that captured
    point instead (the base backup verified, the captured events up to the point replayed
    offline, as a restore to it does), check its structure, trailer and revision, and write it to
    FILE: etcdutl snapshot restore FILE gives the cluster's state at the point. With --drill,
    restore the point into a throwaway etcd and check it there.
    """
    from lifeboat.cli import backups

    return backups.cmd_verify(args)


def cmd_delete(args: argparse.Namespace) -> int:
    """delete one backup (data first, manifest last)

    Delete a backup's objects, then its manifest. Safe to re-run after an interruption.
    """
    from lifeboat.cli import backups

    return backups.cmd_delete(args)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of backups (1 or more), got {text!r}")
    return value
