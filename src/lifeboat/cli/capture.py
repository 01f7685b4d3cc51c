"""``lifeboat capture`` (continuous capture in the foreground) and ``lifeboat timeline``."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lifeboat.capture import Capture, capture_options
from lifeboat.catalog.ids import check_cluster_name
from lifeboat.backup.pipeline import BackupOptions
from lifeboat.backup.synthetic import synthesize
from lifeboat.catalog.timeline import Timeline, Window, build_timeline, point_at_revision
from lifeboat.cli.point import add_point_flags, only_cluster, point_target, resolve_point
from lifeboat.errors import UsageError
from lifeboat.cli.connect import (
    add_command, add_etcd_flags, add_identity_flag, add_repo_flags, add_root_flag, add_tmp_dir_flag, age_identities,
    cluster_name, etcd_settings, open_repository, resolved_config,
)
from lifeboat.cli.output import emit_json, table
from lifeboat.etcd import EtcdClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "capture", cmd_capture,
                    add_etcd_flags, add_repo_flags, add_root_flag, raw=True)
    p.add_argument("--encrypt-to", metavar="RECIPIENT", action="append", default=[],
                   help="age recipient (age1...), SSH public key, or a file of them; repeatable")
    p.add_argument("--no-files", action="store_true",
                   help="base backups hold etcd only, not the control-plane files")
    p.add_argument("--zstd-level", type=int, metavar="N", help="zstd level 1-19 for segments and base backups")
    add_tmp_dir_flag(p, "where a base backup's snapshot is spooled")
    p.add_argument("--flush-interval", metavar="SECONDS",
                   help="close a segment after this long (default 1s) [capture.flush-interval]")
    p.add_argument("--segment-max-bytes", metavar="SIZE",
                   help="close a segment at this size (default 16MiB) [capture.segment-max-bytes]")
    p.add_argument("--spool-dir", type=Path, metavar="DIR",
                   help="local spool while the repository is down (default <root>/var/lib/lifeboat/"
                        "capture-spool) [capture.spool-dir]")
    p.add_argument("--spool-max-bytes", metavar="SIZE",
                   help="spool limit; when full a gap is recorded (default 256MiB) [capture.spool-max-bytes]")

    p = add_command(sub, common, "synthesize", cmd_synthesize, add_repo_flags, add_point_flags)
    add_identity_flag(p, "encrypted backups and segments")
    p.add_argument("--encrypt-to", metavar="RECIPIENT", action="append", default=[],
                   help="age recipient for the new backup (default: encryption.recipients); repeatable")
    add_tmp_dir_flag(p, "where the snapshot is built")

    p = add_command(sub, common, "timeline", cmd_timeline, add_repo_flags, raw=True)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT only set ``stop``; the loop commits and returns."""
    handler = lambda signum, frame: stop.set()  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_capture(args: argparse.Namespace) -> int:
    """capture every change of etcd continuously

    Follow every change of etcd and store it in the repository, so the cluster can be restored to
    any revision or second (lifeboat restore --to-revision/--to-time). At start, resume right after
    the last committed segment of this cluster's newest chain, or take a base backup and start a new
    chain. Then watch the whole keyspace and commit a segment (zstd, age like backups, create-only)
    every capture.flush-interval (default 1s) or capture.segment-max-bytes. If etcd compacted the
    next revision (capture stopped or fell behind), a gap is recorded with its reason and a new base
    is taken at once. While the repository is down, segments wait in a bounded local spool. SIGTERM
    or Ctrl-C commits what was received and exits 0.
    """
    config = resolved_config(args).config
    cluster = check_cluster_name(cluster_name(args) or "default")
    resolved = etcd_settings(args)
    repo = open_repository(args, create=True)
    options = capture_options(config, resolved.settings.endpoints, cluster)
    stop = threading.Event()
    with EtcdClient(resolved.settings) as etcd, _stop_on_signals(stop):
        capture = Capture(etcd, repo, options, stop=stop)
        status = capture.run()
    summary = {"cluster": cluster, "chain": status.chain, "last_revision": status.last_revision,
               "segments": status.segments, "events": status.events, "gaps": status.gaps,
               "base_backups": status.bases, "spooled": status.spooled}
    if args.output == "json":
        emit_json(summary)
    else:
        print(f"capture of cluster {cluster} stopped: chain {status.chain}, last committed revision "
              f"{status.last_revision}, {status.segments} segments ({status.events} events), "
              f"{status.gaps} gaps, {status.spooled} segments still in the local spool")
    return 0


def cmd_synthesize(args: argparse.Namespace) -> int:
    """write a full backup from a base backup plus captured segments

    Build the cluster's snapshot at a captured point offline (the chain's base backup, or a newer
    synthetic one, plus the captured events after it) and store it as a new full backup, encrypted
    and compressed like any, with labels lifeboat.synthetic-chain, -from, -revision and -seen naming
    where it came from. etcd is not contacted. Restores and drills treat it like any backup, and
    restores to later points of the chain start from it; retention then lets the older base and the
    segments before it go (the chain is folded). The agent does not run it: schedule it with cron
    (docs/continuous-capture.md). Default point: the newest captured revision.
    """
    config = resolved_config(args).config
    repo = open_repository(args)
    cluster = cluster_name(args, default=None) or only_cluster(repo)
    identities = age_identities(args)
    if point_target(args) is None:
        timeline = build_timeline(cluster, list(repo.manifests(cluster)), repo.chain_store.chains(cluster))
        chained = [w for w in timeline.windows if w.chain is not None]
        if not chained:
            raise UsageError(f"cluster {cluster} has no capture chain to synthesize from (see 'lifeboat timeline')")
        point = point_at_revision(timeline, chained[-1].last_revision)
    else:
        found = resolve_point(args, repo, cluster, identities, None)
        assert found is not None
        point = found
    options = BackupOptions.from_config(config, (), cluster)
    manifest = synthesize(repo, point, identities, options)
    if args.output == "json":
        emit_json(manifest.to_dict())
    else:
        print(f"synthetic backup {manifest.id} of cluster {cluster} committed: revision {point.revision} "
              f"from backup {point.base.id} + {len(point.segments)} capture segment(s)")
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    """show restorable windows and gaps

    Show, per cluster, the recoverable windows (a base backup and its unbroken chain of capture
    segments; a backup without a chain is a window of one revision) as revision and time ranges,
    and every gap between them with its reason. Times are when capture saw a revision; the
    revision was committed by etcd at or before that time.
    """
    repo = open_repository(args)
    wanted = cluster_name(args, default=None)
    clusters = [wanted] if wanted else sorted({m.cluster for m in repo.manifests()})
    store = repo.chain_store
    timelines = [build_timeline(c, list(repo.manifests(c)), store.chains(c)) for c in clusters]
    if args.output == "json":
        emit_json([timeline_json(t) for t in timelines])
        return 0
    for t in timelines:
        print(f"cluster {t.cluster}")
        table(("FROM REVISION", "TO REVISION", "FROM", "TO", "BASE", "SEGMENTS", "STATE"),
              [(w.first_revision, w.last_revision, _time(w.first_time), _time(w.last_time), w.base.id,
                len(w.segments), _state(w)) for w in t.windows])
        if t.gaps:
            print("gaps:")
            table(("AFTER REVISION", "BEFORE REVISION", "FROM", "TO", "REASON"),
                  [(g.after_revision, g.before_revision or "-", _time(g.after_time),
                    _time(g.before_time) if g.before_time else "-", g.reason) for g in t.gaps])
    return 0


def _state(w: Window) -> str:
    if w.chain is None:
        return "backup only"
    return "capturing" if w.capturing else "ended"


def _time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window_json(w: Window) -> dict[str, Any]:
    return {
        "base": w.base.id, "chain": w.chain.info.chain if w.chain else None,
        "first_revision": w.first_revision, "last_revision": w.last_revision,
        "first_time": _time(w.first_time), "last_time": _time(w.last_time),
        "segments": len(w.segments), "capturing": w.capturing,
        "synthetic": [m.id for m in w.synthetic],  # later bases in the window, written from the chain
    }


def timeline_json(t: Timeline) -> dict[str, Any]:
    return {
        "cluster": t.cluster, "windows": [window_json(w) for w in t.windows],
        "gaps": [{"after_revision": g.after_revision, "before_revision": g.before_revision,
                  "after_time": _time(g.after_time),
                  "before_time": _time(g.before_time) if g.before_time else None, "reason": g.reason}
                 for g in t.gaps],
    }
