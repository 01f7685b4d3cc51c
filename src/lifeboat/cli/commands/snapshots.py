"""The parsers of ``lifeboat snapshot save|status|check``; their work is :mod:`lifeboat.cli.snapshots`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lifeboat.cli.flags import add_command, add_etcd_flags, add_root_flag


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
    from lifeboat.cli import snapshots

    return snapshots.cmd_save(args)


def cmd_status(args: argparse.Namespace) -> int:
    """print a snapshot file's hash, revision, keys and size

    Read a snapshot file offline and print the same hash, revision, total keys and total size as
    'etcdutl snapshot status'.
    """
    from lifeboat.cli import snapshots

    return snapshots.cmd_status(args)


def cmd_check(args: argparse.Namespace) -> int:
    """check a db or snapshot file's structure page by page

    Check FILE (an etcd snapshot or a bbolt db such as member/snap/db) offline: every page below the
    high-water mark is in use exactly once or free, every bucket (nested ones too) can be read, keys
    are in order where lookups expect them, and the sha256 trailer matches if the file has one.
    Prints what is wrong and exits 1 if anything is; exits 0 for a sound file. It does not decode
    etcd's values: 'lifeboat snapshot status' and 'verify' do that.
    """
    from lifeboat.cli import snapshots

    return snapshots.cmd_check(args)
