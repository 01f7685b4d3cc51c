"""The parsers of ``lifeboat capture``, ``synthesize`` and ``timeline``; their work is
:mod:`lifeboat.cli.capture`."""

from __future__ import annotations

import argparse

from lifeboat.cli.flags import (
    absolute_path, add_command, add_etcd_flags, add_identity_flag, add_point_flags, add_repo_flags,
    add_root_flag, add_tmp_dir_flag, recipient_arg, seconds_or_zero,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "capture", cmd_capture,
                    add_etcd_flags, add_repo_flags, add_root_flag, raw=True)
    p.add_argument("--encrypt-to", metavar="RECIPIENT", action="append", default=[], type=recipient_arg,
                   help="age recipient (age1...), SSH public key, or a file of them; repeatable")
    p.add_argument("--no-files", action="store_true",
                   help="base backups hold etcd only, not the control-plane files")
    p.add_argument("--zstd-level", type=int, metavar="N", help="zstd level 1-19 for segments and base backups")
    add_tmp_dir_flag(p, "where a base backup's snapshot is spooled")
    p.add_argument("--flush-interval", metavar="SECONDS",
                   help="close a segment after this long (default 1s) [capture.flush-interval]")
    p.add_argument("--segment-max-bytes", metavar="SIZE",
                   help="close a segment before it would take more than this stored, compressed and "
                   "encrypted (only a single larger revision makes a larger one; default 16MiB) "
                   "[capture.segment-max-bytes]")
    p.add_argument("--spool-dir", type=absolute_path, metavar="DIR",
                   help="local spool while the repository is down (default <root>/var/lib/lifeboat/"
                        "capture-spool) [capture.spool-dir]")
    p.add_argument("--spool-max-bytes", metavar="SIZE",
                   help="spool limit; when full a gap is recorded (default 256MiB) [capture.spool-max-bytes]")

    p = add_command(sub, common, "synthesize", cmd_synthesize, add_repo_flags, add_point_flags)
    add_identity_flag(p, "encrypted backups and segments")
    p.add_argument("--encrypt-to", metavar="RECIPIENT", action="append", default=[], type=recipient_arg,
                   help="age recipient for the new backup (default: encryption.recipients); repeatable")
    add_tmp_dir_flag(p, "where the snapshot is built")

    p = add_command(sub, common, "timeline", cmd_timeline, add_repo_flags, raw=True)

    p = add_command(sub, common, "pack", cmd_pack, add_repo_flags, raw=True)
    add_identity_flag(p, "encrypted segments")
    p.add_argument("--encrypt-to", metavar="RECIPIENT", action="append", default=[], type=recipient_arg,
                   help="age recipient for packs of encrypted segments (default: encryption.recipients); "
                        "repeatable")
    p.add_argument("--min-age", type=seconds_or_zero, metavar="SECONDS",
                   help="pack only segments capture closed at least this long ago "
                        "(default: capture.pack-min-age, 300)")
    p.add_argument("--delete-after", type=seconds_or_zero, metavar="SECONDS",
                   help="delete the segments a pack holds once it has been in the repository this long "
                        "(default: capture.pack-delete-after, 1800: a restore that listed them before the "
                        "pack was written still finds them)")
    p.add_argument("--dry-run", action="store_true", help="say what would be packed and deleted; change nothing")


def cmd_capture(args: argparse.Namespace) -> int:
    """capture every change of etcd continuously

    Follow every change of etcd and store it in the repository, so the cluster can be restored to
    any revision or second (lifeboat restore --to-revision/--to-time). At start, resume right after
    the last committed segment of this cluster's newest chain, or take a base backup and start a new
    chain. Then read the whole keyspace's changes every half flush interval, each pass a watch from
    the first revision not read yet up to where etcd was (a quarter of the CPU of one watch that
    never ends, and fewer messages from etcd; capture.watch: live for that), and commit a segment (zstd,
    age like backups, create-only) within capture.flush-interval (default 1s) of a revision's write
    or at capture.segment-max-bytes. If etcd compacted the
    next revision (capture stopped or fell behind), a gap is recorded with its reason and a new base
    is taken at once. While the repository is down, segments wait in a bounded local spool. SIGTERM,
    SIGHUP or Ctrl-C commits what was received and exits 0. One capture per cluster: it holds the etcd key
    /lifeboat/<cluster>/capture on a lease (agent.lease-ttl, default 15s) and refuses to start
    (exit 1, naming the holder) while the agent's or another capture of the cluster holds it.
    """
    from lifeboat.cli import capture

    return capture.cmd_capture(args)


def cmd_synthesize(args: argparse.Namespace) -> int:
    """write a full backup from a base backup plus captured segments

    Build the cluster's snapshot at a captured point offline (the newest base of the chain before
    it: its own base backup, a synthetic one or one taken while it captured, plus the captured
    events after it) and store it as a new full backup, encrypted and compressed like any, with labels lifeboat.synthetic-chain, -from, -revision and -seen naming
    where it came from. etcd is not contacted. Restores and drills treat it like any backup, and
    restores to later points of the chain start from it; retention then lets the older base and the
    segments before it go (the chain is folded). The agent does not run it: schedule it with cron
    (docs/continuous-capture.md). Default point: the newest captured revision.
    """
    from lifeboat.cli import capture

    return capture.cmd_synthesize(args)


def cmd_pack(args: argparse.Namespace) -> int:
    """pack a cluster's small capture segments into fewer, larger ones

    A quiet cluster's capture closes a small segment every second something changes: up to
    86,400 objects a day, each fetched and checked by a restore and listed by every command that
    reads the chains. pack reads runs of consecutive closed segments smaller than 1 MiB (those
    closed more than --min-age ago, never a chain's newest) and writes them as segments (packs) of
    up to 4 MiB of records each, the same format, create-only; restores, drills and the timeline
    then use them in their place, exactly as before. The segments a pack holds are deleted by a later run, once the
    pack is --delete-after old and has been read back whole. Encrypted segments need the identity
    to read them and a recipient to encrypt the pack to. The agent packs after each backup
    (capture.pack) when it can read the segments; otherwise schedule this with cron, e.g. hourly
    (docs/continuous-capture.md). Exit 1 when a run could not be packed or a pack could not be
    read back (each named on stderr; nothing is deleted for it).
    """
    from lifeboat.cli import capture

    return capture.cmd_pack(args)


def cmd_timeline(args: argparse.Namespace) -> int:
    """show restorable windows and gaps

    Show, per cluster, the recoverable windows (a base backup and its unbroken chain of capture
    segments; a backup without a chain is a window of one revision) as revision and time ranges,
    and every gap between them with its reason. LATER BASES counts the backups inside a window a
    restore to a later point starts from instead of its base (written from the chain by
    synthesize, or taken while the chain captured): the replay applies only the events after
    the newest one. Times are when capture saw a revision; the revision was committed by etcd at
    or before that time.
    """
    from lifeboat.cli import capture

    return capture.cmd_timeline(args)
