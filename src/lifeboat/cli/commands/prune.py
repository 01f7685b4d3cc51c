"""The parsers of ``lifeboat prune``, ``pin`` and ``unpin``; their work is :mod:`lifeboat.cli.prune`."""

from __future__ import annotations

import argparse

from lifeboat.cli.flags import add_cache_flags, add_command, add_repo_flags

# Each retention policy's flag, in the order of lifeboat.retention.POLICY_CLASSES (which a test
# holds this to: the parser is built without importing the policies).
POLICY_HELP = {
    "keep-last": "keep the N newest complete backups",
    "keep-within": "keep every backup taken within DURATION (36h, 7d, 2w)",
    "keep-hourly": "keep the newest backup of each of the last N hours that have one",
    "keep-daily": "keep the newest backup of each of the last N days (UTC) that have one",
    "keep-weekly": "keep the newest backup of each of the last N ISO weeks that have one",
    "keep-monthly": "keep the newest backup of each of the last N months that have one",
    "keep-yearly": "keep the newest backup of each of the last N years that have one",
    "recovery-window": "keep what is needed to restore any moment of the last DURATION",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "prune", cmd_prune, add_repo_flags)
    add_cache_flags(p)
    p.add_argument("--dry-run", action="store_true", help="print the verdicts, delete nothing")
    policies = p.add_argument_group("retention policies (replace the config file's)")
    for name in POLICY_HELP:
        kind = "DURATION" if name in ("keep-within", "recovery-window") else "N"
        policies.add_argument(f"--{name}", metavar=kind, dest=name.replace("-", "_"),
                              help=POLICY_HELP[name])
    p.add_argument("--min-redundancy", type=int, metavar="N",
                   help="never keep fewer complete backups than N (default 1, or the config file's)")
    p.add_argument("--orphan-grace", metavar="DURATION",
                   help="remove manifest-less leftovers and unfinished uploads not written to for "
                        "longer than this (default 24h; at least 1h, or a backup still being written "
                        "could lose its objects)")

    p = add_command(sub, common, "pin", cmd_pin)
    p.add_argument("backup_id", metavar="ID", help="a backup id, or 'latest'")
    p.add_argument("--reason", default="", metavar="TEXT", help="why it is kept (shown by list/show)")
    add_repo_flags(p)

    p = add_command(sub, common, "unpin", cmd_unpin)
    p.add_argument("backup_id", metavar="ID", help="a backup id")
    add_repo_flags(p)


def cmd_prune(args: argparse.Namespace) -> int:
    """delete the backups the retention policies do not keep

    Give every backup a verdict (keep or delete) with its reasons, then delete the 'delete' ones,
    data first and manifest last, so an interrupted prune can be run again. Pinned backups and the
    minimum-redundancy floor are never deleted. Also removes the objects of backups that never got a
    manifest once their newest object (by the store's own time stamp) is older than the orphan grace
    period, and the unfinished uploads a killed backup left once not written to for that long: hidden
    temp files in a local repository, multipart uploads in S3 (aborted; this needs AWS_ACCESS_KEY_ID
    and AWS_SECRET_ACCESS_KEY and the permissions s3:ListBucketMultipartUploads,
    s3:ListMultipartUploadParts and s3:AbortMultipartUpload). Only uploads under the repository's
    clusters/ prefix are touched. Capture chains go with their bases; a chain whose oldest kept base is a later one
    (a synthetic backup, or a backup taken while it captured) is folded (its segments before it go). Policies come
    from the config file's retention: section, or from the flags below (which then replace the file's policies).
    """
    from lifeboat.cli import prune

    return prune.cmd_prune(args)


def cmd_pin(args: argparse.Namespace) -> int:
    """pin a backup so that no prune deletes it

    Write a pin (who, when, why) beside the backup's manifest. Pinned backups are kept by every
    retention policy and 'delete' refuses them without --force.
    """
    from lifeboat.cli import prune

    return prune.cmd_pin(args)


def cmd_unpin(args: argparse.Namespace) -> int:
    """remove a backup's pin

    Remove the pin; retention decides about the backup again.
    """
    from lifeboat.cli import prune

    return prune.cmd_unpin(args)
