"""``lifeboat config validate`` and ``lifeboat config show``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lifeboat.catalog.age_keys import load_recipients
from lifeboat.cli.connect import add_command, add_etcd_flags, add_repo_flags, add_root_flag, resolved_config
from lifeboat.cli.output import emit_json, table
from lifeboat.config import CONFIG_ENV, load_config, shown_values
from lifeboat.errors import UsageError


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
    recipients file on this host), and scheduled drills of encrypted backups without
    encryption.identity-files are errors that name the key. Exit 0 when valid, 3 when not.
    """
    config = load_config(args.file)
    _check_recipient_files(args.file, config.encryption.recipients)
    if (problem := config.drills_cannot_decrypt()) is not None:  # the agent would refuse to start
        raise UsageError(f"{args.file}: {problem}")
    if args.output == "json":
        emit_json({"file": str(args.file), "valid": True})
    else:
        policies = config.retention.policies() if config.retention else {}
        retention = ", ".join(f"{k}={v}" for k, v in policies.items()) or "none"
        print(f"{args.file}: valid (cluster {config.cluster}, retention {retention}, "
              f"backup schedule {config.schedules.backup or 'none'})")
    return 0


def _check_recipient_files(path: Path, recipients: list[str]) -> None:
    """Read every recipients file this host has: a private key there is refused like one inline.

    A file absent here is left for the host that runs the backups (it may live only there).
    """
    for value in recipients:
        if Path(value).is_file():
            try:
                load_recipients([value])
            except UsageError as exc:
                raise UsageError(f"{path}: encryption.recipients: {exc}") from None


def cmd_show(args: argparse.Namespace) -> int:
    """show every setting and where it came from

    Print each setting in effect and its origin (flag, env, file, default). Secrets are never
    printed: for S3 keys only where they come from. The file is --config FILE or $LIFEBOAT_CONFIG.
    """
    resolved = resolved_config(args)
    rows = shown_values(resolved, os.environ)
    if args.output == "json":
        emit_json({"file": str(resolved.path) if resolved.path else None,
                   "values": [{"key": r.key, "value": r.value, "origin": r.origin} for r in rows]})
        return 0
    print(f"config file: {resolved.path or 'none'}")
    table(("KEY", "VALUE", "FROM"), [(r.key, _text(r.value), r.origin) for r in rows])
    return 0


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "[]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
