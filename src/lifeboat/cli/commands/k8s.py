"""The parsers of ``lifeboat k8s ls|get|diff|undelete|history``; their work is :mod:`lifeboat.cli.k8s`,
:mod:`lifeboat.cli.k8s_undelete` and :mod:`lifeboat.cli.k8s_history`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lifeboat.cli.flags import (
    add_command, add_etcd_flags, add_identity_flag, add_point_flags, add_repo_flags, add_root_flag,
    add_tmp_dir_flag,
)

SOURCE_HELP = "'live' (the etcd of the etcd flags), a snapshot file, or a backup id / 'latest' in --repo"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    k8s = sub.add_parser(
        "k8s", help="list, show, diff and undelete Kubernetes objects in backups and etcd",
        description="Read the objects kube-apiserver stores under /registry/ straight from a "
        "snapshot file, a backup, or a live etcd, without an API server.",
    )
    verbs = k8s.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = add_command(verbs, common, "ls", cmd_ls)
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("-n", "--namespace", metavar="NS", help="only this namespace")
    p.add_argument("--kind", metavar="K", help="only this resource or kind (pods, deploy, "
                   "deployments.apps, Widget)")
    add_source_flags(p)

    get_common = argparse.ArgumentParser(add_help=False)
    get_common.add_argument("-o", "--output", choices=("table", "json", "yaml", "raw"), default="table",
                            help="table (metadata), json/yaml (with the stored bytes in base64), "
                                 "raw (the exact stored bytes on stdout)")
    get_common.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    p = add_command(verbs, get_common, "get", cmd_get)
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("object", metavar="KIND/NAME", help="e.g. pod/web-0, deployments.apps/web, "
                   "or a full etcd key /registry/...")
    p.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: default)")
    p.add_argument("--show-secrets", action="store_true", help="print Secret data and annotation values too")
    add_source_flags(p)

    p = add_command(verbs, common, "diff", cmd_diff)
    p.add_argument("a", metavar="A", help=SOURCE_HELP)
    p.add_argument("b", metavar="B", help=SOURCE_HELP)
    p.add_argument("-n", "--namespace", metavar="NS", help="only this namespace")
    p.add_argument("--kind", metavar="K", help="only this resource (pods, deployments.apps)")
    add_source_flags(p)

    _register_undelete(verbs, common)
    _register_history(verbs, common)


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every ``k8s`` command needs to open a SOURCE: repository, age identity, etcd."""
    add_repo_flags(parser)
    add_identity_flag(parser, "encrypted backups and segments")
    add_tmp_dir_flag(parser, "where a backup's snapshot is unpacked while it is read")
    parser.add_argument("--encryption-config", type=Path, metavar="FILE",
                        help="the kube-apiserver's --encryption-provider-config, to decrypt "
                             "objects encrypted at rest (aescbc, aesgcm, secretbox)")
    add_etcd_flags(parser)
    add_root_flag(parser)
    add_point_flags(parser)


def cmd_ls(args: argparse.Namespace) -> int:
    """inventory by namespace and resource, or the objects

    Without -n/--kind: one line per namespace and resource (count, bytes, newest modification
    revision). With -n and/or --kind: the objects (name, uid, created, revisions, encoding,
    encryption). Values, Secret data included, are never printed. Objects that cannot be decoded are
    listed with their error; the rest still show.
    """
    from lifeboat.cli import k8s

    return k8s.cmd_ls(args)


def cmd_get(args: argparse.Namespace) -> int:
    """one object: metadata and stored bytes

    Show one object. JSON-stored objects (custom resources) in full; protobuf ones with their
    decoded metadata and the stored bytes. Secret data is redacted unless --show-secrets. Without
    -n, namespaced objects are looked up in 'default'.
    """
    from lifeboat.cli import k8s

    return k8s.cmd_get(args)


def cmd_diff(args: argparse.Namespace) -> int:
    """objects added, removed and changed between two sources

    Compare two sources key by key: objects only in B are added, only in A removed, with different
    stored bytes changed. Grouped by namespace and resource. With --to-revision or --to-time, the
    one source that is a backup is taken at that point: compare it with 'live' or a snapshot file.
    """
    from lifeboat.cli import k8s

    return k8s.cmd_diff(args)


def _register_undelete(verbs: argparse._SubParsersAction[argparse.ArgumentParser],
                       common: argparse.ArgumentParser) -> None:
    p = add_command(verbs, common, "undelete", cmd_undelete)
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                   help="a snapshot file, or a backup id / 'latest' in --repo")
    p.add_argument("-n", "--namespace", required=True, metavar="NS", help="the namespace to restore")
    p.add_argument("--kind", metavar="K", help="only objects of this resource or kind")
    p.add_argument("--name", metavar="N", help="only objects of this name")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="apply", action="store_false",
                      help="show what would be written and skipped, and why (default)")
    mode.add_argument("--apply", dest="apply", action="store_true", help="write the objects")
    p.add_argument("--force", action="store_true",
                   help="write even though SOURCE's cluster id differs from the live cluster's")
    add_source_flags(p)
    p.set_defaults(apply=False)


def cmd_undelete(args: argparse.Namespace) -> int:
    """write a namespace's objects back from a backup

    Write the exact stored bytes of a namespace's objects from SOURCE back into the live etcd: the
    Namespace object first, owners before what they own, each key only if it is absent (a
    create-only transaction: nothing that exists is overwritten). A dry run by default; --apply
    writes. Refuses when SOURCE is from another etcd cluster. With --encryption-config (the live
    kube-apiserver's), a value encrypted at rest with a key it does not hold is skipped, with why.
    """
    from lifeboat.cli import k8s_undelete

    return k8s_undelete.cmd_undelete(args)


def _register_history(verbs: argparse._SubParsersAction[argparse.ArgumentParser],
                      common: argparse.ArgumentParser) -> None:
    p = add_command(verbs, common, "history", cmd_history)
    p.add_argument("object", metavar="KIND/NAME", help="e.g. deployments.apps/web, configmap/settings, "
                   "or a full etcd key /registry/...")
    p.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: default)")
    add_repo_flags(p)
    add_identity_flag(p, "encrypted backups and segments")
    add_tmp_dir_flag(p, "where base snapshots are unpacked")
    p.add_argument("--encryption-config", type=Path, metavar="FILE",
                   help="the kube-apiserver's --encryption-provider-config, to read objects encrypted at rest")


def cmd_history(args: argparse.Namespace) -> int:
    """every version of one object in the captured timeline

    List every version of one object that the repository can show: the version each capture chain's
    base backup holds, then every captured change, with its revision, the time capture saw it, and
    what changed (JSON objects field by field; protobuf ones by metadata and size). Needs 'lifeboat
    capture'. Secret values are never printed.
    """
    from lifeboat.cli import k8s_history

    return k8s_history.cmd_history(args)
