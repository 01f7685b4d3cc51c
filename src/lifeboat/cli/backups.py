"""``lifeboat backup``, ``list``, ``show``, ``verify``, ``delete``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from lifeboat.catalog.ids import check_cluster_name
from lifeboat.catalog.chains import ChainListing
from lifeboat.catalog.manifest import BackupSummary, DamagedManifest, Manifest
from lifeboat.catalog.repository import BackupRepository, Listing
from lifeboat.catalog.segments import seen_text
from lifeboat.catalog.timeline import build_timeline, cluster_timeline
from lifeboat.catalog.pins import DeletionClaim, Pin
from lifeboat.cli.connect import (
    age_identities, cluster_name, etcd_settings, open_repository, resolved_config, temp_dir,
)
from lifeboat.cli.drills import check_drill_flags
from lifeboat.cli.output import Progress, RoomNotes, StreamedTable, emit_json, human_size, printable, table
from lifeboat.cli.point import resolve_point
from lifeboat.config.values import read_retention_duration
from lifeboat.durable import install_durably, writing_to
from lifeboat.errors import IntegrityError, OperationFailed, Terminated, UsageError

if TYPE_CHECKING:
    from lifeboat.catalog.age_keys import Identity
    from lifeboat.catalog.timeline import RestorePoint
    from lifeboat.verify.backup import VerifyReport


def cmd_backup(args: argparse.Namespace) -> int:
    """take a verified backup of etcd and the control-plane files"""
    # Here, not at the top: list, show and delete start without grpc and the backup pipeline.
    from lifeboat.backup.pipeline import BackupOptions, take_backup
    from lifeboat.etcd import EtcdClient

    config = resolved_config(args).config
    cluster = check_cluster_name(cluster_name(args) or "default")
    # A bad recipient fails before etcd or the repository is touched.
    options = BackupOptions.from_config(config, (), cluster=cluster)
    resolved = etcd_settings(args)
    repo = open_repository(args, create=True)
    options = replace(options, endpoints=resolved.settings.endpoints)
    progress, room = Progress(), RoomNotes(args.output == "json")
    written: list[Manifest] = []
    try:
        with EtcdClient(resolved.settings) as etcd:
            manifest = take_backup(etcd, repo, options, progress=progress, room=room, committed=written.append)
    except Terminated:
        if written:  # the signal came after the manifest: nothing is undone
            raise Terminated(f"backup {written[0].id} was committed to {repo.url} before the signal; "
                             "see 'lifeboat show' (its report was cut short)") from None
        raise
    progress.finish()
    if args.output == "json":
        emit_json({**manifest.to_dict(), "disk": room.to_json()})
    else:
        snap = manifest.snapshot
        print(f"backup {manifest.id} of cluster {manifest.cluster} committed to {repo.url}")
        print(f"  from member {manifest.source.name} ({manifest.source.endpoint}), etcd {manifest.source.etcd_version}")
        print(f"  revision {snap.revision}, {snap.total_key} keys, db {human_size(snap.total_size)}, "
              f"stored {human_size(manifest.stored_size)}"
              + (", encrypted with age" if manifest.encryption else ""))
        print(f"  control-plane files: {len(manifest.files)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """list the backups in a repository"""
    repo = open_repository(args)
    cluster = cluster_name(args, default=None)
    since = parse_since(args.since, repo.clock.now()) if args.since else None
    pages = repo.summary_pages(cluster, since=since, last=args.last)
    ends = WindowEnds(repo)
    problems: dict[tuple[str, str], list[str]] = {}

    def check(b: BackupSummary) -> dict[str, object]:
        if not args.check:
            return {}
        problems[(b.cluster, b.id)] = found = repo.missing_objects(b.manifest)
        return {"check": found or "ok"}

    if args.output == "json":
        listing = [(page, ends.of([b.manifest for b in page.backups])) for page in pages]
        emit_json([{**_summary(b, page.pins.get((b.cluster, b.id))), "window_end": page_ends.get(b.id), **check(b)}
                   for page, page_ends in listing for b in page.backups]
                  + [{"id": d.id, "cluster": d.cluster, "status": "damaged", "reason": d.reason}
                     for page, _ in listing for d in page.damaged])
        return _checked(problems)
    shown = StreamedTable(("ID", "CLUSTER", "STATUS", "REVISION", "KEYS", "STORED", "ENCRYPTED", "FILES",
                           "SOURCE", "PIN", "WINDOW END"))
    damaged: list[DamagedManifest] = []
    for page in pages:
        shown.rows(_rows(page, ends.of([b.manifest for b in page.backups])))
        damaged += page.damaged
        for m in page.backups:
            check(m)
    shown.close()
    for d in damaged:
        print(printable(f"damaged: {d.cluster}/{d.id}: {d.reason}"))
    for (cluster, backup_id), found in problems.items():
        print(f"{cluster}/{backup_id}: " + ("objects present" if not found else "; ".join(found)))
    return _checked(problems)


def _checked(problems: dict[tuple[str, str], list[str]]) -> int:
    bad = [f"{cluster}/{backup_id}" for (cluster, backup_id), found in problems.items() if found]
    if bad:
        raise IntegrityError(f"{len(bad)} backup(s) lack objects or hold objects of the wrong size "
                             f"({', '.join(bad[:5])}); they cannot be restored: delete them, or restore another")
    return 0


def _rows(page: Listing[BackupSummary], ends: dict[str, dict[str, object]]) -> list[tuple[object, ...]]:
    """One page's table rows, damaged manifests among the others in id order."""
    rows: list[tuple[object, ...]] = [
        (m.id, m.cluster, m.status.value, m.snapshot.revision, m.snapshot.total_key, human_size(m.stored_size),
         "age" if m.encryption else "-", b.files, m.source.name,
         "pinned" if (m.cluster, m.id) in page.pins else "-", _window_end_text(ends.get(m.id)))
        for b in page.backups for m in (b.manifest,)
    ]
    rows += [(d.id, d.cluster, "DAMAGED", "-", "-", "-", "-", "-", "-", "-", "-") for d in page.damaged]
    return sorted(rows, key=lambda row: (str(row[0]), str(row[1])))


class WindowEnds:
    """Per backup id, the last revision (and time) restorable from it: its chain's end (for a
    synthetic backup too, the chain it was written from), or itself.

    Each cluster's capture chains are read once, however many pages of backups ask.
    """

    def __init__(self, repo: BackupRepository) -> None:
        self._store = repo.chain_store
        self._chains: dict[str, list[ChainListing]] = {}

    def of(self, manifests: Sequence[Manifest]) -> dict[str, dict[str, object]]:
        ends: dict[str, dict[str, object]] = {}
        for cluster in sorted({m.cluster for m in manifests}):
            if cluster not in self._chains:
                self._chains[cluster] = self._store.chains(cluster)
            timeline = build_timeline(cluster, [m for m in manifests if m.cluster == cluster],
                                      self._chains[cluster])
            for w in timeline.windows:
                for base in w.bases():  # a backup written from the chain or taken as it captured restores to its end
                    ends[base.manifest.id] = {"revision": w.last_revision, "time": seen_text(w.last_time),
                                              "capturing": w.capturing}
        return ends


def _window_end_text(end: dict[str, object] | None) -> str:
    if end is None:
        return "-"
    return f"{end['revision']} ({end['time']})" + (" chain open" if end["capturing"] else "")


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: an RFC 3339 time or date (UTC unless it says otherwise), or an age before ``now``."""
    try:
        age = read_retention_duration(text)
        if age is not None:
            return now - age
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        # Normalised here: a far date with an offset (0001-01-01T00:00:00+14:00) has no UTC time.
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise UsageError(f"--since {text!r}: expected a time (2026-11-22T03:00:00Z), a date "
                         "(2026-11-22) or an age (36h, 7d, 2w) of at most 100 years") from None


def _summary(b: BackupSummary, pin: Pin | None) -> dict[str, object]:
    m = b.manifest
    return {
        "id": m.id, "cluster": m.cluster, "status": m.status.value, "started_at": m.started_at,
        "finished_at": m.finished_at, "revision": m.snapshot.revision,
        "total_key": m.snapshot.total_key, "stored_size": m.stored_size,
        "encryption": m.encryption, "files": b.files, "source": m.source.name,
        "pin": asdict(pin) if pin else None,
    }


def cmd_show(args: argparse.Namespace) -> int:
    """show one backup's manifest"""
    repo = open_repository(args)
    m = repo.find(args.backup_id, cluster_name(args, default=None))
    pin = repo.pin_of(m)
    missing = repo.missing_objects(m)
    if args.output == "json":
        # The manifest as stored, plus the pin (a separate object) and what is missing, only when
        # there is such a thing.
        emit_json({**m.to_dict(), **({"pin": asdict(pin)} if pin else {}),
                   **({"missing_objects": missing} if missing else {})})
        return _shown(m, missing)
    print(f"backup     {m.id}\ncluster    {m.cluster}\nstatus     {m.status.value}")
    if pin:
        print(printable(f"pinned     by {pin.pinned_by} at {pin.pinned_at}" + (f": {pin.reason}" if pin.reason else "")))
    print(f"taken      {m.started_at} → {m.finished_at} by lifeboat {m.tool_version}")
    s, sn = m.source, m.snapshot
    print(printable(f"source     {s.name} ({s.endpoint}) member {s.member_id}, cluster {s.cluster_id}, "
                    f"etcd {s.etcd_version}, raft term {s.raft_term} index {s.raft_index}")
          + (", leader" if s.is_leader else ""))
    print(f"snapshot   revision {sn.revision}, hash {sn.hash}, {sn.total_key} keys, "
              f"size {sn.total_size} ({human_size(sn.total_size)})")
    print(f"codec      {m.compression}" + (f", age to {len(m.recipients)} recipient(s)" if m.encryption else ""))
    print("objects:")
    table(("NAME", "STORED", "RAW", "SHA256"),
          [(o.name, human_size(o.size), human_size(o.raw_size), o.sha256) for o in m.objects])
    if m.files:
        print("control-plane files:")
        table(("PATH", "MODE", "OWNER", "SIZE", "SHA256"),
              [(f.path, f"{f.mode:04o}", f"{f.owner or f.uid}:{f.group or f.gid}", f.size, f.sha256[:16]) for f in m.files])
    print("in store   " + ("every object present with its size" if not missing else "; ".join(missing)))
    return _shown(m, missing)


def _shown(m: Manifest, missing: list[str]) -> int:
    if missing:
        raise IntegrityError(f"backup {m.id} is incomplete in the repository: {'; '.join(missing)}; "
                             "it cannot be restored")
    return 0


def _refuse_an_open_chains_base(repo: BackupRepository, manifest: Manifest) -> None:
    """UsageError when ``manifest`` is the newest base of a chain capture may still be writing:
    deleted, it leaves the chain nothing to be restored from while capture goes on with it."""
    from lifeboat.retention.chains import open_chain_bases
    from lifeboat.retention.prune import ORPHAN_GRACE

    timeline = cluster_timeline(repo, manifest.cluster)
    why = open_chain_bases([timeline], repo.clock.now(), ORPHAN_GRACE).get((manifest.cluster, manifest.id))
    if why is not None:
        raise UsageError(f"backup {manifest.id} is the {why}: deleting it would leave the segments capture "
                         "writes nothing to be restored from; stop the capture first, or pass --force")


def cmd_verify(args: argparse.Namespace) -> int:
    """fetch a backup and check every checksum and the snapshot"""
    # Here, not at the top: list, show and delete start without the verifier and the drill.
    from lifeboat.cli.drills import cmd_drill

    check_drill_flags(args)
    identities = age_identities(args)
    if args.save_snapshot is not None:
        _check_save_target(args.save_snapshot, identities or ())
    repo = open_repository(args)
    point = resolve_point(args, repo, cluster_name(args, default=None), identities, args.backup_id)
    if point is not None:
        if args.drill:
            return cmd_drill(args, repo, point.base, identities, point)
        if args.save_snapshot is None:
            raise UsageError("--to-revision/--to-time verify a point by restoring it (add --drill) or write its "
                             "snapshot to a file for etcd's own tools (add --save-snapshot FILE)")
        return _saved_point(repo, point, identities, args.save_snapshot, args.output == "json")
    if not args.backup_id:
        raise UsageError("give a backup id or 'latest' (see 'lifeboat list')")
    manifest = repo.find(args.backup_id, cluster_name(args, default=None))
    if args.drill:
        return cmd_drill(args, repo, manifest, identities)
    progress, room = Progress(), RoomNotes(args.output == "json")
    report = _verified_and_saved(repo, manifest, identities, args, progress, room)
    progress.finish()
    if args.output == "json":
        emit_json({"id": manifest.id, "ok": report.ok, "checks": [asdict(c) for c in report.checks],
                   "disk": room.to_json()})
    else:
        table(("CHECK", "RESULT", "DETAIL"), [(c.name, "ok" if c.ok else "FAILED", c.detail) for c in report.checks])
        print(f"backup {manifest.id}: " + ("verified" if report.ok else "VERIFICATION FAILED"))
    failure = report.first_failure()
    if failure is not None:
        raise IntegrityError(f"backup {manifest.id} failed verification: {failure.name}: {failure.detail}")
    return 0


def _saved_point(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None, saved: Path,
                 json_output: bool) -> int:
    """``verify --to-revision R --save-snapshot FILE``: the point's snapshot, checked, at FILE."""
    from lifeboat.pitr.point_file import save_point_snapshot

    result = save_point_snapshot(repo, point, identities, saved)
    report, built = result.report, result.built
    if json_output:
        emit_json({"id": point.base.id, "revision": point.revision, "ok": report.ok, "saved": str(saved) if
                   result.saved else None, "events": built.events, "segments": built.segments,
                   "checks": [asdict(c) for c in report.checks]})
    else:
        table(("CHECK", "RESULT", "DETAIL"), [(c.name, "ok" if c.ok else "FAILED", c.detail) for c in report.checks])
        if result.saved:
            print(f"snapshot of cluster {point.base.cluster} at revision {point.revision} (base backup "
                  f"{point.base.id} + {built.events} events of {built.segments} segments) written to {saved}")
    failure = report.first_failure()
    if failure is not None:
        raise IntegrityError(f"the snapshot at revision {point.revision} failed its check, {saved} not written: "
                             f"{failure.name}: {failure.detail}")
    return 0


def _check_save_target(saved: Path, identities: Sequence[Identity]) -> None:
    """Refuse, before anything is downloaded, a ``--save-snapshot`` FILE that cannot be one: a
    directory, a path in no directory, or a file that decrypts the backup (overwritten by it)."""
    if saved.is_dir():
        raise UsageError(f"--save-snapshot {saved} is a directory; give the path of the file to write, "
                         f"e.g. {saved / 'snapshot.db'}")
    if not saved.parent.is_dir():
        raise UsageError(f"--save-snapshot {saved}: directory {saved.parent} does not exist")
    if saved.exists() and any(saved.samefile(identity.source) for identity in identities
                              if Path(identity.source).exists()):
        raise UsageError(f"--save-snapshot {saved} is an identity file this command decrypts with; "
                         "give another path")


def _verified_and_saved(repo: BackupRepository, manifest: Manifest, identities: Sequence[Identity] | None,
                        args: argparse.Namespace, progress: Progress, room: RoomNotes) -> VerifyReport:
    """The report of ``verify_backup``; with ``--save-snapshot FILE`` the snapshot is written as
    ``FILE.part`` and renamed to FILE, fsynced, only once verified: a download that failed or was
    interrupted leaves no file at FILE that looks complete (an existing one is left as it was).
    One run at a time writes FILE (:func:`~lifeboat.durable.writing_to`)."""
    from lifeboat.pitr.point import staging_dir
    from lifeboat.verify.backup import verify_backup

    saved: Path | None = args.save_snapshot
    # A point's run killed while saving to the same FILE left its staged segments too.
    with writing_to(saved, lambda part: [staging_dir(part)]) if saved is not None else nullcontext() as part:
        report = verify_backup(repo, manifest, identities, tmp_dir=temp_dir(args), keep_snapshot=part,
                               progress=progress, room=room)
        if saved is not None and part is not None and report.ok:
            install_durably(part, saved)
    return report


def cmd_delete(args: argparse.Namespace) -> int:
    """delete one backup (data first, manifest last)"""
    if args.backup_id == "latest":  # what it means changes with every backup: a deletion names its backup
        raise UsageError("delete takes a backup id, not 'latest'; 'lifeboat show latest' or 'lifeboat list' shows it")
    repo = open_repository(args)
    manifest = repo.locate(args.backup_id, cluster_name(args, default=None))  # a damaged one too
    pin = repo.pin_of(manifest)
    if pin is not None and not args.force:
        raise UsageError(f"backup {manifest.id} is pinned ({pin.reason or 'no reason given'}); "
                         f"run 'lifeboat unpin {manifest.id}' first, or pass --force")
    if isinstance(manifest, Manifest) and not args.force:
        _refuse_an_open_chains_base(repo, manifest)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete backup {manifest.id} without --yes")
        answer = input(f"delete backup {manifest.id} of cluster {manifest.cluster}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    if not args.force:
        # Claimed as a prune claims it: a pin given since the check above wins, and none can be
        # given while the backup is deleted.
        why_not = repo.claim_deletion(manifest, DeletionClaim.now(clock=repo.clock), stale_after=timedelta(0))
        if why_not is not None:
            reason = "it was pinned meanwhile" if why_not.startswith("pinned") else why_not
            raise OperationFailed(f"backup {manifest.id} was not deleted: {reason}")
    repo.delete(manifest)
    if args.output == "json":
        emit_json({"deleted": manifest.id, "cluster": manifest.cluster})
    else:
        print(f"deleted backup {manifest.id} of cluster {manifest.cluster}")
    return 0
