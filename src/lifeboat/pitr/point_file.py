"""A captured point's snapshot written to a file, for a restore by hand with etcd's own tools.

``lifeboat verify --to-revision R --save-snapshot FILE``: the point's base backup is fetched
and verified, the chain's events up to R are replayed into it offline (as a restore to R
does), and the result is checked before it is put at FILE: its bbolt structure, etcd's sha256
trailer, and that etcd would serve it at revision R. It is written as ``FILE.part`` and
renamed to FILE (fsynced) only once every check passed; a failed or interrupted run leaves
FILE as it was. One run at a time writes FILE (:func:`~lifeboat.durable.writing_to`): another
is refused at once, and what a killed one left (``FILE.part``, its staged segments) is removed
first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import RestorePoint
from lifeboat.durable import install_durably, writing_to
from lifeboat.pitr.point import PointSnapshot, build_point_snapshot, staging_dir
from lifeboat.snapshot import snapshot_status
from lifeboat.snapshot.check import check_snapshot
from lifeboat.snapshot.mvcc import read_meta
from lifeboat.verify.backup import Check, VerifyReport


@dataclass(frozen=True)
class SavedPoint:
    report: VerifyReport  # of the file written (the base's own checks ran while it was fetched)
    built: PointSnapshot
    saved: Path | None  # None: a check failed, nothing was put at the path asked


def save_point_snapshot(repo: BackupRepository, point: RestorePoint, identities: Sequence[Identity] | None,
                        dest: Path) -> SavedPoint:
    """Build ``point``'s snapshot beside ``dest``, check it, and put it at ``dest`` if sound.

    A base or segment that fails its checks raises (IntegrityError), as a restore's would; room
    is checked before anything is downloaded (NoRoom); another run writing ``dest`` is refused
    (:class:`~lifeboat.durable.TargetInUse`)."""
    with writing_to(dest, leftovers=lambda part: [staging_dir(part)]) as part:
        built = build_point_snapshot(repo, point, identities, part)
        report = VerifyReport(point.base.id, list(_checks(part, point.revision)))
        if not report.ok:
            return SavedPoint(report, built, None)
        install_durably(part, dest)
        return SavedPoint(report, built, dest)


def _checks(path: Path, revision: int) -> Sequence[Check]:
    structure = check_snapshot(path)
    checks = [
        Check("structure", not structure.problems,
              "; ".join(structure.problems) or f"{structure.keys} keys in {structure.buckets} buckets, sound"),
        Check("trailer", structure.trailer == "matches", f"etcd's sha256 trailer {structure.trailer}"),
    ]
    if not structure.problems:
        status = snapshot_status(path)
        served = read_meta(path).state_revision(status.revision)
        checks.append(Check("revision", served == revision,
                            f"{served} (the point: {revision}; keys {status.total_key}, hash {status.hash})"))
    return checks
