"""The restore planner: a pure function from what is known to the ordered steps the executor runs.

``--dry-run`` prints the very :class:`RestorePlan` the executor would run. Order: everything
that only reads or downloads (preflight, fetch and verify) comes before anything that
touches etcd, so a bad backup or a bad flag stops the restore with the node unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifeboat.catalog.timeline import RestorePoint
from lifeboat.catalog.manifest import BackupStatus, Manifest
from lifeboat.errors import OperationFailed, UsageError
from lifeboat.etcd.data_dir import WAL_SEGMENT_BYTES
from lifeboat.restore.journal import Journal
from lifeboat.restore.native import NativeRestore
from lifeboat.restore.steps import (
    BumpRevision,
    CleanUp,
    DropSnapshot,
    FetchFiles,
    FetchSnapshot,
    MoveAside,
    OldDataThere,
    Preflight,
    PutBack,
    PutInPlace,
    RestoreData,
    RestoreFiles,
    ReplayCapture,
    RestorePaths,
    RestoreTool,
    Start,
    Step,
    Stop,
    VerifyMember,
)
from lifeboat.restore.supervisor import Supervisor
from lifeboat.restore.target import RestoreTarget
from lifeboat.snapshot.writer import MAX_REVISION, SUGGESTED_BUMP

DEFAULT_BUMP = SUGGESTED_BUMP

NEXT_STEPS = (
    "restart every kube-apiserver (after all etcd members are restored), then kube-controller-manager, "
    "kube-scheduler and every kubelet, so no component keeps state newer than the backup",
    "stale /registry/masterleases/* and leader-election leases (kube-system Lease objects) from before "
    "the restore may linger until they expire; delete them if a component waits on one",
)


@dataclass(frozen=True)
class RestoreInputs:
    """Everything the planner needs; nothing here is read from the node or the network."""

    manifest: Manifest
    target: RestoreTarget
    supervisor: Supervisor
    tool: RestoreTool
    stamp: str
    files: bool = False
    bump_revision: int | None = None  # None: bump by DEFAULT_BUMP; 0: never
    start: bool = True  # False (--no-start): stop once the restored data dir is in place
    point: RestorePoint | None = None  # --to-revision/--to-time: replay capture onto the manifest's backup

    @property
    def revision(self) -> int:
        """The revision the restored member must serve (before any bump)."""
        return self.point.revision if self.point is not None else self.manifest.snapshot.revision


@dataclass(frozen=True)
class RevisionBump:
    """How far a restore raises the revision, and who does it: the restore tool or lifeboat."""

    amount: int
    by: str  # "tool": its --bump-revision/--mark-compacted; "lifeboat": bump-revision on the restored db
    tool: str

    def describe(self) -> str:
        if self.amount == 0:
            return "none (--bump-revision 0)"
        if self.by == "tool":
            return f"+{self.amount} by {self.tool} (--bump-revision {self.amount} --mark-compacted)"
        return (f"+{self.amount} by lifeboat, natively, on the restored db ({self.tool} has no "
                "--bump-revision/--mark-compacted)")

    def to_dict(self) -> dict[str, Any]:
        return {"amount": self.amount, "by": self.by if self.amount else None, "tool": self.tool}


@dataclass(frozen=True)
class RestorePlan:
    """The ordered steps of a restore (or rollback), and what the operator must know."""

    title: str
    paths: RestorePaths
    steps: tuple[Step, ...]
    notes: tuple[str, ...]
    next_steps: tuple[str, ...]
    rollback: bool = False
    bump: RevisionBump | None = None

    def lines(self, done: tuple[str, ...] = ()) -> list[str]:
        """The plan as an operator reads it; steps in ``done`` are marked as such."""
        out = [self.title]
        if self.bump is not None:
            out.append(f"  revision bump: {self.bump.describe()}")
        for number, step in enumerate(self.steps, 1):
            mark = " (done)" if step.key in done else ""
            out.append(f"  {number:2}. {step.describe()}{mark}")
        out += [f"  note: {note}" for note in self.notes]
        return out

    def to_dict(self, done: tuple[str, ...] = ()) -> dict[str, Any]:
        return {
            "title": self.title, "rollback": self.rollback,
            "data_dir": str(self.paths.data_dir), "stamp": self.paths.stamp,
            "steps": [{"key": s.key, "describe": s.describe(), "done": s.key in done} for s in self.steps],
            "notes": list(self.notes), "next_steps": list(self.next_steps),
            "revision_bump": None if self.bump is None else self.bump.to_dict(),
        }


def plan_restore(inputs: RestoreInputs) -> RestorePlan:
    """The steps that restore ``inputs.manifest`` into ``inputs.target`` on this node."""
    m, t, sup = inputs.manifest, inputs.target, inputs.supervisor
    if m.status != BackupStatus.COMPLETE:
        raise OperationFailed(f"backup {m.id} is {m.status.value}, not a complete backup; choose another")
    if inputs.files and not m.files:
        raise UsageError(f"backup {m.id} holds no control-plane files; restore without --files")
    bump, notes = _bump(inputs)
    native = bump.by == "lifeboat" and bump.amount > 0
    paths = RestorePaths(t.data_dir, inputs.stamp)
    apiserver = sup.manages("kube-apiserver")
    # The snapshot, the restored db, a WAL segment; and the bumped db's copy when lifeboat bumps.
    # lifeboat's own writer commits into the fetched snapshot, which becomes the restored db.
    in_place = isinstance(inputs.tool, NativeRestore)
    copies = 1 if in_place else 3 if native else 2
    # A replay stages its segments beside the snapshot; what its rows add is checked once they
    # are surveyed (ReplayCapture), before it writes any.
    segments = inputs.point.segment_bytes if inputs.point is not None else 0
    need = copies * m.snapshot.total_size + WAL_SEGMENT_BYTES + segments
    steps: list[Step] = [
        Preflight("preflight", data_dir=t.data_dir, tool=inputs.tool.describe(),
                  etcd_version=m.source.etcd_version, need_bytes=need, segment_bytes=segments),
        FetchSnapshot("fetch-snapshot", backup_id=m.id, snapshot=paths.snapshot,
                      stored=f"{m.stored_size} bytes stored, {m.compression}"
                      + (", age-encrypted" if m.encryption else ""), point=inputs.point),
    ]
    if inputs.point is not None and inputs.point.replays:
        steps.append(ReplayCapture("replay-capture", point=inputs.point, snapshot=paths.snapshot, keep_record=in_place,
                                   copies_after=copies - 1, sample=inputs.start))
    if inputs.files:
        steps.append(FetchFiles("fetch-files", backup_id=m.id, archive=paths.archive))
    steps += _stop_control_plane(sup)
    steps += [
        MoveAside("move-aside", source=t.data_dir, destination=paths.moved_aside, journal_field="moved_aside"),
        RestoreData("restore-data", snapshot=paths.snapshot, staging=paths.staging, revision=inputs.revision,
                    bump_revision=bump.amount if bump.by == "tool" and bump.amount else None,
                    tool=inputs.tool.describe(), sample=paths.sample if inputs.start else None),
    ]
    if not in_place:  # lifeboat's own writer moved the snapshot into the data dir
        steps.append(DropSnapshot("drop-snapshot", snapshot=paths.snapshot,
                                  sample=paths.sample if inputs.start else None))
    if native:
        steps.append(BumpRevision("bump-revision", staging=paths.staging, amount=bump.amount,
                                  revision=inputs.revision))
    steps.append(PutInPlace("put-in-place", staging=paths.staging, data_dir=t.data_dir))
    if inputs.files:
        steps.append(RestoreFiles("restore-files", archive=paths.archive, count=len(m.files),
                                  stamp=inputs.stamp))
    if inputs.start:
        steps += _start_and_check(sup, inputs.revision + bump.amount, paths,
                                  inputs.revision if bump.amount else None)
    else:
        notes.append("--no-start: etcd is left stopped once the restored data dir is in place (its keyspace "
                     "was compared with the snapshot's offline); start it and check it yourself")
    if not apiserver:
        notes.append("kube-apiserver is not managed here: stop every kube-apiserver before this restore "
                     "and start them after all etcd members are back")
    steps.append(CleanUp("clean-up", work=paths.work, moved_aside=paths.moved_aside))
    if not t.single_member:
        notes.append(f"member {t.name} of {len(t.members)}: restore every member from backup {m.id} with "
                     "the same --initial-cluster and --initial-cluster-token (see 'lifeboat restore plan')")
    what = (f"backup {m.id} (cluster {m.cluster}, revision {m.snapshot.revision}, {m.snapshot.total_key} keys)"
            if inputs.point is None else
            f"cluster {m.cluster} to revision {inputs.point.revision} (base backup {m.id} at revision "
            f"{inputs.point.base_revision} + {len(inputs.point.segments)} capture segment(s))")
    title = f"restore {what} as member {t.name} into {t.data_dir} [supervisor: {sup.kind}]"
    next_steps = NEXT_STEPS if inputs.start else (*how_to_start(sup, t.single_member), *NEXT_STEPS)
    return RestorePlan(title, paths, tuple(steps), tuple(notes), next_steps, bump=bump)


def _start_and_check(sup: Supervisor, revision: int, paths: RestorePaths,
                     compacted_before: int | None) -> list[Step]:
    return [
        Start.of(sup, "etcd", undo_on_failure=True),
        VerifyMember("verify-member", revision=revision, snapshot=paths.snapshot, sample=paths.sample,
                     compacted_before=compacted_before, undo_on_failure=True),
        *_start_apiserver(sup),
    ]


def _stop_control_plane(sup: Supervisor) -> list[Step]:
    """Stop kube-apiserver (when ``sup`` manages it), then etcd."""
    apiserver: list[Step] = [Stop.of(sup, "kube-apiserver")] if sup.manages("kube-apiserver") else []
    return [*apiserver, Stop.of(sup, "etcd")]


def _start_apiserver(sup: Supervisor) -> list[Step]:
    """Start kube-apiserver once etcd is up, when ``sup`` manages it."""
    return [Start.of(sup, "kube-apiserver")] if sup.manages("kube-apiserver") else []


def how_to_start(sup: Supervisor, single_member: bool) -> tuple[str, ...]:
    """What the operator runs after ``--no-start``: start etcd (then kube-apiserver), check it."""
    when = "" if single_member else (" (on every member once all are restored: a member serves only "
                                     "once a quorum of them runs)")
    lines = [f"start etcd{when}: {sup.start_hint('etcd')}"]
    if sup.manages("kube-apiserver"):
        lines.append(f"once etcd is healthy, start kube-apiserver: {sup.start_hint('kube-apiserver')}")
    lines.append("check it: lifeboat status (with this node's etcd flags) must show every member healthy "
                 "and one leader")
    return tuple(lines)


def _bump(inputs: RestoreInputs) -> tuple[RevisionBump, list[str]]:
    """The bump on every etcd version: the tool's own when it has one, else lifeboat's.

    Both write the same rows (see ``snapshot.writer.bump_revision``). The tool's is preferred
    when its ``snapshot restore --help`` lists both flags: it writes them inside the restore it
    runs anyway, where lifeboat's adds a commit and a ``snapshot check`` of the restored db.
    (Not timed against each other: no etcdutl 3.5.10+ / etcdctl 3.4.27+ is installable offline.)
    """
    tool, wanted = inputs.tool, inputs.bump_revision
    if wanted is not None and wanted < 0:
        raise UsageError(f"--bump-revision must be 0 (off) or a positive number, not {wanted}")
    if wanted is not None and inputs.revision + wanted > MAX_REVISION:
        # Refused here, not by the bump step: that one runs after the old data dir was moved aside.
        raise UsageError(f"--bump-revision {wanted} would raise revision {inputs.revision} past etcd's "
                         f"largest revision {MAX_REVISION}; choose a bump of at most {MAX_REVISION - inputs.revision}")
    by = "tool" if tool.can_bump_revision else "lifeboat"
    if wanted == 0:
        return RevisionBump(0, by, tool.describe()), [
            "--bump-revision 0: the restored revision is the snapshot's; Kubernetes watch caches "
            "and informers may miss changes until every client relists (restart them)"]
    return RevisionBump(wanted or DEFAULT_BUMP, by, tool.describe()), []


def plan_rollback(journal: Journal, paths: RestorePaths, supervisor: Supervisor, stamp: str,
                  *, start: bool = True) -> RestorePlan:
    """The steps that put the moved-aside data dir back and start etcd again (unless not ``start``).

    A restore that stopped etcd but had not moved the data dir yet is rolled back by starting
    what it stopped (after putting the data dir back, should a crash have hit mid-rename).
    """
    if "moved_aside" not in journal.state:
        return _plan_restart(journal, paths, supervisor, start)
    moved = journal.state.get("moved_aside")
    if not moved:
        raise UsageError(f"the restore journaled for {paths.data_dir} moved no data dir aside "
                         "(there was none); there is nothing to roll back to")
    steps: list[Step] = [
        OldDataThere("check-old-data", moved_aside=Path(moved), data_dir=paths.data_dir),
        *_stop_control_plane(supervisor),
        MoveAside("set-restored-aside", source=paths.data_dir, destination=paths.set_aside(stamp),
                  journal_field="restored_set_aside"),
        PutBack("put-back", moved_aside=Path(moved), data_dir=paths.data_dir),
    ]
    return _rollback(journal, paths, supervisor, steps, start, f"put {moved} back")


def _plan_restart(journal: Journal, paths: RestorePaths, supervisor: Supervisor, start: bool) -> RestorePlan:
    steps: list[Step] = [PutBack("put-back", moved_aside=paths.moved_aside, data_dir=paths.data_dir,
                                 only_if_there=True)]
    return _rollback(journal, paths, supervisor, steps, start,
                     "it stopped before moving the data dir; start what it stopped")


def _rollback(journal: Journal, paths: RestorePaths, supervisor: Supervisor, steps: list[Step], start: bool,
              what: str) -> RestorePlan:
    """The rollback plan: ``steps``, then (with ``start``) etcd and the API server started again."""
    if start:
        steps += [Start.of(supervisor, "etcd"), *_start_apiserver(supervisor)]
    # The fetched snapshot in the work dir is decrypted (every Secret of the cluster): nothing resumes
    # a rolled-back restore, so nothing there is needed again.
    steps.append(CleanUp("clean-up", work=paths.work, moved_aside=paths.moved_aside, rollback=True))
    title = (f"roll back the restore of backup {journal.backup_id} in {paths.data_dir}: {what} "
             f"[supervisor: {supervisor.kind}]")
    next_steps = () if start else how_to_start(supervisor, len(journal.initial_cluster.split(",")) == 1)
    return RestorePlan(title, paths, tuple(steps), (), next_steps, rollback=True)
