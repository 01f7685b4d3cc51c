"""The parsers of ``lifeboat config validate|show``; their work is :mod:`lifeboat.cli.configuration`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lifeboat.cli.flags import add_command, add_etcd_flags, add_repo_flags, add_root_flag


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("config", help="check a config file, or show the settings in effect",
                           description="The YAML config file (see docs/configuration.md). Values "
                           "come from flags, then environment variables, then the file, then "
                           "defaults.")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = add_command(verbs, common, "validate", cmd_validate)
    p.add_argument("file", type=Path, metavar="FILE")

    p = add_command(verbs, common, "show", cmd_show, add_etcd_flags, add_repo_flags, add_root_flag)


def cmd_validate(args: argparse.Namespace) -> int:
    """check a config file; exit 3 if it is wrong

    Load FILE and check every key and value: unknown keys, wrong types, negative counts, bad cron
    expressions and durations, a private key among encryption.recipients (inline or in a
    recipients file on this host), scheduled drills of encrypted backups without
    encryption.identity-files, and a capture.segment-max-bytes too small for age's header to
    these recipients are errors that name the key. Exit 0 when valid, 3 when not.
    """
    from lifeboat.cli import configuration

    return configuration.cmd_validate(args)


def cmd_show(args: argparse.Namespace) -> int:
    """show every setting and where it came from

    Print each setting in effect and its origin (flag, env, file, default). Secrets are never
    printed: for S3 keys only where they come from. The file is --config FILE or $LIFEBOAT_CONFIG.
    """
    from lifeboat.cli import configuration

    return configuration.cmd_show(args)
