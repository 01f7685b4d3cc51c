"""``lifeboat config validate`` and ``lifeboat config show``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lifeboat.catalog.age_keys import load_recipients
from lifeboat.cli.connect import resolved_config
from lifeboat.cli.output import emit_json, table
from lifeboat.config import LifeboatConfig, load_config, shown_values
from lifeboat.config.credentials import read_secret
from lifeboat.config.rules import names_recipients_file
from lifeboat.errors import UsageError
from lifeboat.store import open_store


def cmd_validate(args: argparse.Namespace) -> int:
    """check a config file; exit 3 if it is wrong"""
    config = load_config(args.file)
    _check_repository_url(args.file, config.repository.url)
    _check_recipients(args.file, config.encryption.recipients)
    _check_key_files(args.file, config)
    if (problem := config.drills_cannot_decrypt()) is not None:  # the agent would refuse to start
        raise UsageError(f"{args.file}: {problem}")
    _check_segment_room(args.file, config)
    if args.output == "json":
        emit_json({"file": str(args.file), "valid": True})
    else:
        policies = config.retention.policies() if config.retention else {}
        retention = ", ".join(f"{k}={v}" for k, v in policies.items()) or "none"
        print(f"{args.file}: valid (cluster {config.cluster}, retention {retention}, "
              f"backup schedule {config.schedules.backup or 'none'})")
    return 0


def _check_repository_url(path: Path, url: str | None) -> None:
    """The URL as every command reads it (opening a store does no I/O): an agent whose config
    validates must not fail on it at its first backup."""
    if url:
        try:
            open_store(url, {})
        except UsageError as exc:
            raise UsageError(f"{path}: repository.url: {exc}") from None


def _check_recipients(path: Path, recipients: list[str]) -> None:
    """Check every recipient as ``backup`` and the agent load them: inline ones, and every
    recipients file this host has (a private key there is refused like one inline; a device,
    FIFO or directory is no recipients file).

    A file absent here is left for the host that runs the backups (it may live only there).
    """
    for value in recipients:
        if names_recipients_file(value) and not Path(value).exists():
            continue
        try:
            load_recipients([value])
        except UsageError as exc:
            raise UsageError(f"{path}: encryption.recipients: {exc}") from None


def _check_key_files(path: Path, config: LifeboatConfig) -> None:
    """Read every S3 key file this host has, as the commands will (a FIFO, a device, an empty
    file is refused); one absent here is left for the host that runs the backups."""
    s3 = config.repository.s3
    for key, file in (("access-key-id-file", s3.access_key_id_file),
                      ("secret-access-key-file", s3.secret_access_key_file),
                      ("session-token-file", s3.session_token_file)):
        if file is not None and os.path.lexists(file):
            try:
                read_secret(file, key)
            except UsageError as exc:
                raise UsageError(f"{path}: {exc}") from None


def _check_segment_room(path: Path, config: LifeboatConfig) -> None:
    """Refuse a capture.segment-max-bytes that capture would refuse at start for these
    recipients; unchecked while a recipients file is not on this host."""
    if not config.encryption.recipients:  # 4KiB, the least allowed, leaves room without age
        return
    try:
        recipients = load_recipients(config.encryption.recipients)
    except UsageError:  # a recipients file only the backup host has
        return
    from lifeboat.capture.run import require_room_for_events  # capture's modules: 0.1 s to import

    try:
        require_room_for_events(config.capture.segment_max_bytes, recipients)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def cmd_show(args: argparse.Namespace) -> int:
    """show every setting and where it came from"""
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
