"""``lifeboat verify ID --drill``: the drill and its report (its flags are in :mod:`lifeboat.cli.flags`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.timeline import RestorePoint
from lifeboat.catalog.repository import BackupRepository
from lifeboat.cli.connect import temp_dir
from lifeboat.cli.output import Progress, RoomNotes, emit_json, table
from lifeboat.cli.writer import writer_choice
from lifeboat.errors import IntegrityError, OperationFailed, UsageError

if TYPE_CHECKING:
    from lifeboat.verify.drill import DrillReplay, DrillReport


def check_drill_flags(args: argparse.Namespace) -> None:
    """Refuse the drill's own flags on a ``verify`` without ``--drill``, which would not use them."""
    if args.drill:
        return
    given = [flag for flag, value in (("--restore-tool", args.restore_tool), ("--restore-with", args.restore_with),
                                      ("--etcd-binary", args.etcd_binary)) if value is not None]
    if given:
        verb, pronoun = ("apply", "them") if len(given) > 1 else ("applies", "it")
        raise UsageError(f"{' and '.join(given)} only {verb} to a drill: add --drill, or leave {pronoun} out")


def cmd_drill(args: argparse.Namespace, repo: BackupRepository, manifest: Manifest,
              identities: Sequence[Identity] | None, point: RestorePoint | None = None) -> int:
    """Run the drill for ``verify --drill`` and print its report; raise on failure.

    With ``point``, the drill restores the base with the capture replayed up to the point.
    """
    if args.save_snapshot is not None:
        raise UsageError("--save-snapshot cannot be used with --drill; run verify without --drill")
    # Here, not at the top: the commands these flags belong to start without the drill.
    from lifeboat.restore.native import native_or
    from lifeboat.verify.drill import run_drill

    progress, room = Progress(), RoomNotes(args.output == "json")
    choice = writer_choice(args)
    report = run_drill(repo, manifest, identities, choose_writer=lambda tool: native_or(tool, choice=choice),
                       tmp_dir=temp_dir(args),
                       restore_tool=args.restore_tool, etcd_binary=args.etcd_binary,
                       progress=progress, replay=_replayer(repo, point, identities) if point else None,
                       room=room)
    progress.finish()
    _print(report, room, args.output == "json")
    failure = report.first_failure()
    if failure is None:
        return 0
    if report.verify.first_failure() is not None:
        raise IntegrityError(f"backup {manifest.id} failed verification, not restored: "
                             f"{failure.name}: {failure.detail}")
    raise OperationFailed(f"drill of backup {manifest.id} failed: {failure.name}: {failure.detail}")


def _replayer(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None) -> DrillReplay:
    from lifeboat.pitr import build_point_snapshot
    from lifeboat.verify.drill import DrillReplay

    def replay(snapshot: Path, rows_room: Callable[[int], None]) -> int:
        # Committed into the fetched and verified snapshot itself: no second db beside it.
        return build_point_snapshot(repo, point, identities, snapshot, base_snapshot=snapshot,
                                    rows_room=rows_room).point.revision
    return DrillReplay(point.segment_bytes, replay)


def _print(report: DrillReport, room: RoomNotes, as_json: bool) -> None:
    if as_json:
        emit_json({
            "disk": room.to_json(),
            "id": report.backup_id, "ok": report.ok,
            "checks": [asdict(c) for c in report.verify.checks],
            "drill_checks": [asdict(c) for c in report.checks],
            "phases": [asdict(p) for p in report.phases], "seconds": round(report.seconds, 3),
            "restore_tool": report.restore_tool, "restore_with": report.restore_with, "etcd": report.etcd,
        })
        return
    rows = [(c.name, "ok" if c.ok else "FAILED", c.detail)
            for c in (*report.verify.checks, *report.checks)]
    table(("CHECK", "RESULT", "DETAIL"), rows)
    table(("PHASE", "SECONDS"), [(p.name, f"{p.seconds:.2f}") for p in report.phases])
    print(f"data dirs written by: {report.restore_tool} (--restore-with {report.restore_with}); {report.etcd}")
    verdict = "drill passed" if report.ok else "DRILL FAILED"
    print(f"backup {report.backup_id}: {verdict} in {report.seconds:.1f}s")
