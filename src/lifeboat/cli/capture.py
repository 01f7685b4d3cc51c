"""``lifeboat capture`` (continuous capture in the foreground), ``synthesize``, ``timeline`` and ``pack``."""

from __future__ import annotations

import argparse
import os
import socket
import threading
from datetime import datetime, timezone
from typing import Any

from lifeboat.capture import Capture, capture_options
from lifeboat.capture.lock import CaptureLock
from lifeboat.capture.packing import Packer
from lifeboat.catalog.ids import check_cluster_name
from lifeboat.backup.pipeline import BackupOptions
from lifeboat.backup.synthetic import synthesize
from lifeboat.catalog.timeline import Timeline, TimelineGap, Window, build_timeline, cluster_timeline, point_at_revision
from lifeboat.cli.point import only_cluster, point_target, resolve_point
from lifeboat.errors import NotFound, OperationFailed, UsageError
from lifeboat.cli.connect import age_identities, cluster_name, etcd_settings, open_repository, resolved_config
from lifeboat.cli.output import emit_json, printable, table
from lifeboat.clock import SystemClock
from lifeboat.etcd import EtcdClient
from lifeboat.waits import SERVICE_SIGNALS, stop_on_signals


def cmd_capture(args: argparse.Namespace) -> int:
    """capture every change of etcd continuously"""
    config = resolved_config(args).config
    cluster = check_cluster_name(cluster_name(args) or "default")
    resolved = etcd_settings(args)
    repo = open_repository(args, create=True)
    options = capture_options(config, resolved.settings.endpoints, cluster)
    stop = threading.Event()
    with EtcdClient(resolved.settings) as etcd:
        # Refused at once, naming the holder, while the agent's or another hand-run capture
        # of this cluster runs; every segment is then fenced by the lock.
        lock = CaptureLock(etcd, cluster, f"lifeboat capture on {socket.gethostname()} (pid {os.getpid()})",
                           int(round(config.agent.lease_ttl)), SystemClock())
        try:
            lock.acquire()
            with stop_on_signals(stop, SERVICE_SIGNALS):
                status = Capture(etcd, repo, options, stop=stop, fence=lock.hold).run()
        finally:
            lock.release()
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
    """write a full backup from a base backup plus captured segments"""
    config = resolved_config(args).config
    repo = open_repository(args)
    cluster = cluster_name(args, default=None) or only_cluster(repo)
    identities = age_identities(args)
    if point_target(args) is None:
        timeline = cluster_timeline(repo, cluster)
        chained = [w for w in timeline.windows if w.chain is not None]
        if not chained:
            raise UsageError(f"cluster {cluster} has no capture chain to synthesize from (see 'lifeboat timeline')")
        point = point_at_revision(timeline, chained[-1].last_revision)
        if not point.replays:  # a quiet cluster: what a nightly run finds, not a mistake
            said = f"nothing captured since backup {point.base.id} (revision {point.revision}): no synthetic backup written"
            if args.output == "json":
                emit_json({"written": None, "base": point.base.id, "revision": point.revision})
            else:
                print(said)
            return 0
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


def cmd_pack(args: argparse.Namespace) -> int:
    """pack a cluster's small capture segments into fewer, larger ones"""
    config = resolved_config(args).config
    repo = open_repository(args)
    cluster = cluster_name(args, default=None) or only_cluster(repo)
    packer = Packer.for_config(config, repo.chain_store, age_identities(args), min_age=args.min_age,
                               delete_after=args.delete_after)
    delete_after = packer.delete_after.total_seconds()
    now = datetime.now(timezone.utc)
    waits = f"wait until their pack is {delete_after:g} s old"
    if args.dry_run:
        # How many packs a run makes is known once its records are read: the runs are said.
        plans = packer.plan(cluster, now)
        runs = [run for plan in plans for run in plan.runs]
        deleted, waiting = sum(len(plan.held) for plan in plans), sum(plan.waiting for plan in plans)
        summary: dict[str, Any] = {"cluster": cluster, "dry_run": True, "runs": len(runs),
                                   "packed": sum(map(len, runs)), "deleted": deleted, "waiting": waiting}
        text = (f"cluster {cluster}: would pack {summary['packed']} capture segment(s) in {len(runs)} run(s); "
                f"would delete {deleted} segment(s) a pack holds, once it reads back whole; {waiting} {waits}")
        refused: list[str] = []
    else:
        result = packer.run(cluster, now)
        refused = result.refused
        summary = {"cluster": cluster, "dry_run": False, "packs": result.packs, "packed": result.packed,
                   "deleted": result.deleted, "waiting": result.waiting, "refused": refused}
        text = (f"cluster {cluster}: packed {result.packed} capture segment(s) into {result.packs}; deleted "
                f"{result.deleted} segment(s) a checked pack holds; {result.waiting} {waits}")
    if args.output == "json":
        emit_json(summary)
    else:
        print(text)
    if refused:
        raise OperationFailed("; ".join(refused))
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    """show restorable windows and gaps"""
    repo = open_repository(args)
    wanted = cluster_name(args, default=None)
    clusters = [wanted] if wanted else sorted({m.cluster for m in repo.manifests()})
    store = repo.chain_store
    chains = {c: store.chains(c) for c in clusters}  # listed once each: the check below reads them too
    timelines = [build_timeline(c, list(repo.manifests(c)), chains[c]) for c in clusters]
    if wanted and not timelines[0].windows and not chains[wanted]:
        known = sorted({m.cluster for m in repo.manifests()})
        raise NotFound(f"no backup or capture chain of cluster {wanted} in {repo.url}"
                       + (f"; its clusters: {', '.join(known)}" if known else "; it holds no backup"))
    if args.output == "json":
        emit_json([timeline_json(t) for t in timelines])
        return 0
    for t in timelines:
        print(f"cluster {t.cluster}")
        table(("FROM REVISION", "TO REVISION", "FROM", "TO", "BASE", "LATER BASES", "SEGMENTS", "STATE"),
              [(w.first_revision, w.last_revision, _time(w.first_time), _time(w.last_time), w.base.id,
                len(w.bases()) - 1, len(w.segments), _state(w)) for w in t.windows])
        for unplaced in t.unplaced:
            print(printable(f"note: {unplaced.text()}"))
        if t.gaps:
            print("gaps:")
            table(("AFTER REVISION", "BEFORE REVISION", "FROM", "TO", "REASON"),
                  [(g.after_revision, g.before_revision or "-", _time(g.after_time),
                    _time(g.before_time) if g.before_time else "-", g.reason) for g in t.gaps])
    return 0


def _state(w: Window) -> str:
    if w.chain is None:
        return "backup only"
    # Open: no end recorded, so a capture may extend it (whether one runs now is not known here).
    return "open" if w.capturing else "ended"


def _time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window_json(w: Window) -> dict[str, Any]:
    return {
        "base": w.base.id, "chain": w.chain.info.chain if w.chain else None,
        "first_revision": w.first_revision, "last_revision": w.last_revision,
        "first_time": _time(w.first_time), "last_time": _time(w.last_time),
        "segments": len(w.segments), "capturing": w.capturing,
        "synthetic": [m.id for m in w.synthetic],  # later bases in the window, written from the chain
        "taken_while_capturing": [m.id for m in w.passing],  # later bases: backups taken as it captured
    }


def timeline_json(t: Timeline) -> dict[str, Any]:
    return {
        "cluster": t.cluster, "windows": [window_json(w) for w in t.windows],
        "gaps": [gap_json(g) for g in t.gaps],
        "unplaced": [{"backup": u.backup, "chain": u.chain, "reason": u.reason} for u in t.unplaced],
    }


def gap_json(g: TimelineGap) -> dict[str, Any]:
    return {"after_revision": g.after_revision, "before_revision": g.before_revision,
            "after_time": _time(g.after_time), "before_time": _time(g.before_time) if g.before_time else None,
            "reason": g.reason, "segments_missing": g.missing}
