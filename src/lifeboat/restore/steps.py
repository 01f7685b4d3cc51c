"""The steps of a restore and of its rollback: each describes itself, checks, and runs.

Every ``run`` is safe to repeat after a crash that happened after its effect but before the
journal recorded it (a rename already done is recognised, not redone). Nothing here deletes
data the node had: old data dirs and files are renamed aside; only lifeboat's own work
files (the downloaded snapshot, a half-written staging dir) are removed.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from lifeboat.catalog.age_keys import Identity
from lifeboat.catalog.manifest import Manifest
from lifeboat.catalog.repository import BackupRepository
from lifeboat.catalog.timeline import RestorePoint
from lifeboat.clock import Clock, SystemClock, wait_for
from lifeboat.disk import MARGIN, FreeSpace, free_bytes, require_room, size_text
from lifeboat.durable import fsync_dir, move_durably
from lifeboat.errors import DecryptionError, IntegrityError, LifeboatError, NoRoom, OperationFailed, UsageError
from lifeboat.etcd import KeyValue
from lifeboat.etcd.binaries import SnapshotRestore
from lifeboat.restore.content import (
    KeySamples,
    KeyspaceDigest,
    keeps_snapshot_pages,
    keeps_snapshot_rows,
    keyspace_digest,
    load_sample,
    newest_revision,
    save_sample,
)
from lifeboat.pitr import ChainSurvey, PointSnapshot, build_point_snapshot
from lifeboat.snapshot import check_trailer
from lifeboat.snapshot.mvcc import served_revision
from lifeboat.snapshot.writer import bump_restored_db, replayed_difference
from lifeboat.restore.file_policy import refuse_unsafe_destinations
from lifeboat.restore.files import check_archive, fetch_archive, install_archive
from lifeboat.restore.journal import Journal, PathField
from lifeboat.restore.native import (
    NativeRestore, commit_record, committed_keyspace_difference, keep_replay_record, replay_record, replayed_into,
    undo_commit,
)
from lifeboat.restore.supervisor import Component, Supervisor
from lifeboat.restore.target import RestoreTarget
from lifeboat.verify.backup import replay_need, verify_backup
from lifeboat.waits import finished, joined

class RestoreTool(Protocol):
    """What the restore needs of ``etcd.binaries.RestoreTool`` (fakes stand in for unit tests)."""

    @property
    def can_bump_revision(self) -> bool: ...

    @property
    def copies_key_pages(self) -> bool:
        """Whether its output keeps the snapshot's pages of bucket ``key`` and adds its bump's
        changes as new pages after them (then the restored rows need not all be read)."""

    def describe(self) -> str: ...

    def check_compatible(self, snapshot_version: str) -> None: ...

    def run(self, restore: SnapshotRestore) -> None: ...


class MemberProbe(Protocol):
    """Reads from the restored member only; raise ``BackendUnavailable`` while it cannot serve."""

    def revision(self) -> int:
        """The store revision of a linearizable read (needs a leader, so a quorum)."""

    def get(self, key: bytes) -> KeyValue | None: ...

    def get_many(self, keys: Sequence[bytes]) -> list[KeyValue | None]:
        """``get`` of each key, in order, over one connection."""

    def watch_refused_as_compacted(self, revision: int) -> bool:
        """Whether the member refuses a watch from ``revision`` as compacted."""


@dataclass(frozen=True)
class RestorePaths:
    """Every path a restore touches, derived from the data dir and the plan's stamp."""

    data_dir: Path
    stamp: str

    @property
    def moved_aside(self) -> Path:
        return self.data_dir.with_name(f"{self.data_dir.name}.lifeboat-moved-{self.stamp}")

    @property
    def work(self) -> Path:
        return self.data_dir.with_name(f"{self.data_dir.name}.lifeboat-work")

    @property
    def snapshot(self) -> Path:
        return self.work / "snapshot.db"

    @property
    def sample(self) -> Path:
        """The snapshot's keys to check on the started member, kept once the snapshot goes."""
        return self.work / "key-sample.json"

    @property
    def archive(self) -> Path:
        return self.work / "control-plane.tar"

    @property
    def staging(self) -> Path:
        return self.work / "data"

    def set_aside(self, stamp: str) -> Path:
        """Where rollback puts the restored data dir."""
        return self.data_dir.with_name(f"{self.data_dir.name}.lifeboat-restored-{stamp}")


class CheckedFiles:
    """Files this process checked as it wrote them (a snapshot's sha256 trailer), so that a later
    step of the same run need not read them again; a file changed since is not among them."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[int, int]] = {}

    def record(self, path: Path) -> None:
        info = path.stat()
        self._seen[path] = (info.st_size, info.st_mtime_ns)

    def unchanged(self, path: Path) -> bool:
        try:
            info = path.stat()
        except OSError:
            return False
        return self._seen.get(path) == (info.st_size, info.st_mtime_ns)


@dataclass
class RestoreContext:
    """What the steps act on: the seams, the journal, and a way to talk to the operator."""

    target: RestoreTarget
    paths: RestorePaths
    supervisor: Supervisor
    member: MemberProbe
    root: Path
    journal: Journal
    save: Callable[[Journal], None]
    manifest: Manifest | None = None  # None while rolling back
    tool: RestoreTool | None = None
    repo: BackupRepository | None = None
    identities: Sequence[Identity] | None = None
    say: Callable[[str], None] = lambda line: None
    stop_timeout: float = 120.0
    start_timeout: float = 120.0
    health_timeout: float = 300.0
    probe_interval: float = 0.1  # a probe is one read on a new connection
    clock: Clock = field(default_factory=SystemClock)
    checked: CheckedFiles = field(default_factory=lambda: CheckedFiles())
    samples: KeySamples = field(default_factory=lambda: KeySamples())
    free_space: FreeSpace = free_bytes
    removals: list[threading.Thread] = field(default_factory=list)
    surveys: dict[Path, ChainSurvey] = field(default_factory=dict)  # capture segments surveyed ahead

    def close_surveys(self) -> None:
        """Stop the surveys started ahead that no step took, and remove what they staged."""
        while self.surveys:
            self.surveys.popitem()[1].close()

    def remove_meanwhile(self, path: Path) -> None:
        """Unlink ``path`` in a thread while the next steps run (freeing a GB-sized file's blocks
        takes the filesystem a while, mostly waiting on disk); :meth:`removed` waits for it."""
        removal = threading.Thread(target=lambda: path.unlink(missing_ok=True), name="lifeboat-remove")
        removal.start()
        self.removals.append(removal)

    def removed(self) -> None:
        """Wait until what :meth:`remove_meanwhile` began is done."""
        while self.removals:
            joined(self.removals.pop())

    def restoring(self) -> tuple[Manifest, RestoreTool]:
        if self.manifest is None or self.tool is None:
            raise UsageError("this step restores a backup; it needs the backup and a restore tool")
        return self.manifest, self.tool

    def repository(self, what: str) -> BackupRepository:
        """The repository a step fetches ``what`` from; UsageError when none was given."""
        if self.repo is None:
            raise UsageError(f"no repository to fetch {what} from; pass --repo")
        return self.repo

    def remember(self, journal: Journal) -> None:
        """Make ``journal`` (this one with what a step learned) the journal, and save it."""
        self.journal = journal
        self.save(self.journal)


@dataclass(frozen=True)
class Step:
    """One step; subclasses set ``key`` (journal id) and override describe/check/run."""

    key: str
    undo_on_failure: bool = field(default=False, kw_only=True)
    changes_node: ClassVar[bool] = True  # False: see PreparingStep

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, ctx: RestoreContext) -> None:
        """Raise if the step's precondition does not hold; changes nothing."""

    def run(self, ctx: RestoreContext) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class PreparingStep(Step):
    """A step that only reads the node and downloads: a restore that stopped before any other
    step ran left the node as it was, and its journal must not block the next one."""

    changes_node: ClassVar[bool] = False


@dataclass(frozen=True)
class Preflight(PreparingStep):
    data_dir: Path
    tool: str
    etcd_version: str
    need_bytes: int
    segment_bytes: int = 0  # of need_bytes: the capture segments a replay stages

    def describe(self) -> str:
        return (f"check the node: {self.data_dir} is an etcd data dir (or absent) and not a mount point; "
                f"{self.tool} fits etcd {self.etcd_version}; it needs about {size_text(self.need_bytes + MARGIN)} "
                "free beside it")

    def check(self, ctx: RestoreContext) -> None:
        _check_data_dir(self.data_dir, "move-aside" in ctx.journal.done)
        check_work_dir(ctx.paths.work)
        ctx.restoring()[1].check_compatible(self.etcd_version)
        staged = ", the capture segments the replay stages" if self.segment_bytes else ""
        require_room(_existing_parent(self.data_dir), self.need_bytes,
                     f"the restore (the snapshot, the restored db, a WAL segment{staged})",
                     "re-run when there is room", ctx.free_space)

    def run(self, ctx: RestoreContext) -> None:
        owner = self.data_dir if self.data_dir.exists() else _existing_parent(self.data_dir)
        st = owner.stat()
        ctx.remember(ctx.journal.with_state({"owner_uid": st.st_uid, "owner_gid": st.st_gid}))


def _check_data_dir(data_dir: Path, already_moved: bool) -> None:
    if already_moved or not os.path.lexists(data_dir):
        return
    if data_dir.is_symlink() or not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} is not a directory; point it at etcd's data dir")
    # An empty one (a distro package's, or one a wiki's 'rm -rf /var/lib/etcd/member' emptied) is
    # moved aside like any other: nothing in it is lost, and the restored one takes its owner.
    if not (data_dir / "member").is_dir() and any(data_dir.iterdir()):
        raise UsageError(f"--data-dir {data_dir} exists but holds no member/ directory: it is not an "
                         "etcd data dir; check --data-dir")
    if os.path.ismount(data_dir):
        raise UsageError(f"--data-dir {data_dir} is a mount point and cannot be moved aside; "
                         "restore into a directory inside it and point etcd's --data-dir there")


def check_work_dir(work: Path) -> None:
    """UsageError unless ``work`` is absent or a directory lifeboat made: not a symlink, owned by
    this user, closed to others. The decrypted backup is written there, and renamed from there
    into the data dir's place (a rename cannot leave the filesystem)."""
    try:
        info = os.lstat(work)
    except FileNotFoundError:
        return
    problem = ("a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory" if not stat.S_ISDIR(info.st_mode)
               else f"owned by uid {info.st_uid}" if info.st_uid != os.geteuid()
               else f"open to others (mode {stat.S_IMODE(info.st_mode):04o})" if info.st_mode & 0o077 else None)
    if problem is not None:
        raise UsageError(f"{work} is {problem}, not lifeboat's work dir (the decrypted backup is written there): "
                         "move it away, then re-run")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass(frozen=True)
class FetchSnapshot(PreparingStep):
    backup_id: str
    stored: str
    snapshot: Path
    point: RestorePoint | None = None  # a replay follows: its segments are surveyed meanwhile

    def describe(self) -> str:
        meanwhile = (f"; meanwhile download, check and survey the {len(self.point.segments)} capture segment(s) "
                     "the replay applies" if self.point is not None and self.point.replays else "")
        return (f"fetch backup {self.backup_id} ({self.stored}) to {self.snapshot}; check every sha256, "
                f"etcd's trailer, and revision/hash/keys against the manifest{meanwhile}")

    def run(self, ctx: RestoreContext) -> None:
        check_work_dir(self.snapshot.parent)  # again: the node may have changed since preflight
        self.snapshot.parent.mkdir(mode=0o700, exist_ok=True)
        check_work_dir(self.snapshot.parent)
        manifest = ctx.restoring()[0]
        repo = ctx.repository("the backup")
        # The records of a replay or commit into a snapshot fetched before (a restore that stopped
        # there and was given up) describe a file this fetch replaces.
        commit_record(self.snapshot).unlink(missing_ok=True)
        replay_record(self.snapshot).unlink(missing_ok=True)
        if self.point is not None and self.point.replays:
            # The survey needs no base: it runs on the second core while the base downloads.
            ctx.surveys[self.snapshot] = ChainSurvey(repo, self.point, ctx.identities,
                                                     self.snapshot.with_name(self.snapshot.name + ".segments"))
        try:
            report = verify_backup(repo, manifest, ctx.identities, tmp_dir=self.snapshot.parent,
                                   keep_snapshot=self.snapshot, free_space=ctx.free_space,
                                   room_hint="re-run when there is room beside the data dir (nothing on the node "
                                             "was changed)")
            failure = report.first_failure()
            if failure is not None or not report.ok:
                self.snapshot.unlink(missing_ok=True)
                what = f"{failure.name}: {failure.detail}" if failure else "no checks ran"
                raise IntegrityError(f"backup {self.backup_id} failed verification ({what}); "
                                     "nothing on the node was changed; restore another backup")
        except DecryptionError as exc:
            ctx.close_surveys()
            self.snapshot.unlink(missing_ok=True)
            raise DecryptionError(f"backup {self.backup_id}: {exc}; nothing on the node was changed") from None
        except BaseException:
            ctx.close_surveys()
            raise
        ctx.checked.record(self.snapshot)  # its trailer was checked as it came


@dataclass(frozen=True)
class ReplayCapture(PreparingStep):
    """Bring the fetched base snapshot forward to the point: replay captured events offline."""

    point: RestorePoint
    snapshot: Path
    # lifeboat's own writer commits into the replayed file next and checks it there: the replay
    # keeps a record of what it overwrote and appended instead of hashing the whole db for a trailer.
    keep_record: bool = False
    # How many copies of the replayed snapshot the restore writes next (0: committed in place);
    # with what the rows add, they must fit before the replay writes any row.
    copies_after: int = 0
    # A key sample of the restored db follows (RestoreData): the base's part of it is read in a
    # child process while the replay writes, so that RestoreData reads only the replayed rows.
    sample: bool = False

    def describe(self) -> str:
        chain = self.point.window.chain
        first = ("new pages first, what they overwrite and their sha256 kept beside it" if self.keep_record
                 else "new pages and trailer first")
        return (f"replay {len(self.point.segments)} capture segment(s) of chain "
                f"{chain.info.chain if chain else '-'} onto the snapshot, revisions "
                f"{self.point.base_revision + 1}..{self.point.revision}, offline into its MVCC store "
                f"(committed into the fetched file itself as bbolt commits: {first}, the meta page last); "
                "first check there is room for the pages its rows fill"
                + (" and the copies of the grown snapshot written next" if self.copies_after else ""))

    def run(self, ctx: RestoreContext) -> None:
        repo = ctx.repository("the capture segments")
        survey = ctx.surveys.pop(self.snapshot, None)  # started by the fetch, unless that ran before
        if newest_revision(self.snapshot) == self.point.revision:
            if survey is not None:
                survey.close()
            return  # replayed before an interruption that came before the journal entry
        if self.sample:
            ctx.samples.start_below(self.snapshot, self.point.base_revision)
        # The fetched base was checked (FetchSnapshot). The file gets either its new trailer from
        # the sha256 the writer computed as it wrote it, or (keep_record) the record with which
        # the commit of the restored db checks the base's bytes and the replayed ones in one pass.
        try:
            built = build_point_snapshot(repo, self.point, ctx.identities, self.snapshot, base_snapshot=self.snapshot,
                                         survey=survey, rows_room=lambda rows: self._rows_room(ctx, rows),
                                         record=keep_replay_record(self.snapshot) if self.keep_record else None)
        except (IntegrityError, NoRoom):
            # A damaged or missing segment: this point cannot be restored from this chain, so the
            # decrypted base (every Secret of the cluster) goes, as a fetch that failed its checks does.
            # No room for the replay: nothing changed the node, so the next run fetches the base again.
            self.snapshot.unlink(missing_ok=True)
            raise
        ctx.checked.record(self.snapshot)
        ctx.say(replayed_line(built))

    def _rows_room(self, ctx: RestoreContext, rows: int) -> None:
        """Refuse (NoRoom) unless the rows the replay adds fit, and the copies of the grown
        snapshot the restore writes next (with a WAL segment): the need up front (Preflight)
        could count neither."""
        copies = self.copies_after
        need = replay_need(self.snapshot, rows, copies)
        what = "the replay (the rows it adds to the snapshot" + (
            ", the restored db's copy of it" if copies == 1 else f", {copies} copies of it" if copies else "")
        require_room(self.snapshot.parent, need, what + ", a WAL segment)",
                     "re-run the same command when there is room (nothing on the node was changed)", ctx.free_space)


def replayed_line(built: PointSnapshot) -> str:
    """What the replay did, and how much of its time it waited for the survey of the segments
    (which runs beside the base's fetch) before it could write anything."""
    return (f"replayed {built.events:,} events of {built.segments} segment(s) in {built.seconds:.2f} s: "
            f"{built.survey_wait:.2f} s waiting for the survey of the segments to end, "
            f"{built.seconds - built.survey_wait:.2f} s applying them")


@dataclass(frozen=True)
class FetchFiles(PreparingStep):
    backup_id: str
    archive: Path

    def describe(self) -> str:
        return f"fetch the control-plane files of backup {self.backup_id} to {self.archive} and check each sha256"

    def check(self, ctx: RestoreContext) -> None:
        # What the manifest lists, before anything is fetched (a dry run checks this too); the
        # archive itself is checked once fetched.
        listed = [f.path for f in ctx.restoring()[0].files if f.path.startswith("/") and ".." not in f.path]
        refuse_unsafe_destinations(listed, ctx.root, ctx.supervisor.restored_file_destination)

    def run(self, ctx: RestoreContext) -> None:
        fetch_archive(ctx.repository("the backup"), ctx.restoring()[0], ctx.identities, self.archive)
        # Refused here, before etcd is stopped, rather than when the files are put in place.
        check_archive(self.archive, ctx.root, ctx.supervisor.restored_file_destination)


@dataclass(frozen=True)
class SupervisedStep(Step):
    """Stopping or starting one component; ``how`` is the supervisor's own account of it."""

    component: Component
    how: str

    def describe(self) -> str:
        return self.how


class Stop(SupervisedStep):
    @classmethod
    def of(cls, supervisor: Supervisor, component: Component) -> Stop:
        """The step ``stop:<component>``, in ``supervisor``'s words."""
        kind = cls if supervisor.stops_by_itself else StoppedByOperator
        return kind(f"stop:{component}", component=component, how=supervisor.describe_stop(component))

    def run(self, ctx: RestoreContext) -> None:
        ctx.supervisor.stop(self.component)
        ctx.supervisor.wait_stopped(self.component, ctx.stop_timeout)


class StoppedByOperator(Stop):
    """``stop:<component>`` of a supervisor that only checks the operator stopped it (--supervisor
    none): it changes nothing, so a restore refused there (still running) blocks no later one."""

    changes_node: ClassVar[bool] = False


class Start(SupervisedStep):
    @classmethod
    def of(cls, supervisor: Supervisor, component: Component, *, undo_on_failure: bool = False) -> Start:
        """The step ``start:<component>``, in ``supervisor``'s words."""
        return cls(f"start:{component}", component=component, how=supervisor.describe_start(component),
                   undo_on_failure=undo_on_failure)

    def run(self, ctx: RestoreContext) -> None:
        ctx.supervisor.start(self.component)
        ctx.supervisor.wait_started(self.component, ctx.start_timeout)


@dataclass(frozen=True)
class MoveAside(Step):
    source: Path
    destination: Path
    journal_field: PathField

    def describe(self) -> str:
        return f"move {self.source} aside to {self.destination} (kept, never deleted)"

    def run(self, ctx: RestoreContext) -> None:
        if os.path.lexists(self.source):
            _rename(self.source, self.destination, "already exists; move it away, then re-run")
        elif not os.path.lexists(self.destination):
            ctx.remember(ctx.journal.with_path(self.journal_field, None))
            return
        ctx.remember(ctx.journal.with_path(self.journal_field, str(self.destination)))


@dataclass(frozen=True)
class RestoreData(Step):
    snapshot: Path
    staging: Path
    revision: int
    bump_revision: int | None
    tool: str
    sample: Path | None = None  # a VerifyMember follows: the snapshot's keys it checks, sampled while the
    # tool works and kept here


    def describe(self) -> str:
        bump = f" with --bump-revision {self.bump_revision} --mark-compacted" if self.bump_revision else ""
        return (f"snapshot restore into {self.staging}{bump} by {self.tool}; compare its keyspace up to "
                f"revision {self.revision} with the snapshot's; set mode 0700 and the old owner")

    def run(self, ctx: RestoreContext) -> None:
        tool = ctx.restoring()[1]
        if isinstance(tool, NativeRestore):
            self._commit_into_snapshot(ctx, tool)
            return
        if self.staging.exists():
            shutil.rmtree(self.staging)  # our own output of an interrupted run, never the node's data
        t = ctx.target
        restored = self.staging / "member" / "snap" / "db"
        # A restore tool that bumps the revision itself adds a row to bucket ``key``: then its
        # pages differ from the snapshot's and the rows are compared (the snapshot's side read
        # while the tool works), unless the tool only adds pages (lifeboat's own writer).
        # Otherwise the restored db normally keeps the snapshot's pages of bucket ``key``
        # untouched, which one byte comparison of the two files shows.
        compare_rows = bool(self.bump_revision) and not tool.copies_key_pages
        if self.sample is not None:
            ctx.samples.start(self.snapshot)
        # lifeboat checks etcd's sha256 trailer itself (with the CPU's SHA extensions, about four
        # times faster than the tool's own check) while the restore tool, another process, works.
        with ThreadPoolExecutor(1, thread_name_prefix="lifeboat-keyspace") as pool:
            # A snapshot fetched by an earlier, interrupted run is checked again before it is used.
            expected = pool.submit(_checked_keyspace, self.snapshot, self.revision,
                                   not ctx.checked.unchanged(self.snapshot), compare_rows)
            try:
                tool.run(SnapshotRestore(
                    self.snapshot, self.staging, t.name, t.initial_cluster, t.token, t.peer_urls,
                    self.bump_revision, skip_hash_check=True))
                want = finished(expected)
            except BaseException:
                shutil.rmtree(self.staging, ignore_errors=True)  # our own output, never the node's data
                raise
        _compare_keyspace(self.snapshot, restored, self.revision, want, self.bump_revision or 0)
        self._finish(ctx, ctx.samples.take(self.snapshot) if self.sample is not None else None)

    def _commit_into_snapshot(self, ctx: RestoreContext, tool: NativeRestore) -> None:
        """lifeboat's own writer: the fetched snapshot (in the work dir, beside the data dir, so
        on its filesystem) becomes the member's db, committed into and renamed, never copied.

        A run interrupted after its commit began is undone first (the commit's record puts the
        snapshot's bytes back, a moved db is moved back), and the snapshot's trailer checked
        again: nothing is committed twice, and nothing unchecked is used.
        """
        restored = self.staging / "member" / "snap" / "db"
        if commit_record(self.snapshot).exists() and not self.snapshot.exists() and restored.is_file():
            os.rename(restored, self.snapshot)  # moved by an interrupted run; undone below
            fsync_dir(self.snapshot.parent)
        if self.staging.exists():
            shutil.rmtree(self.staging)  # our own output of an interrupted run, never the node's data
        undo_commit(self.snapshot)
        if not ctx.checked.unchanged(self.snapshot):
            # Fetched by an earlier, interrupted run (or put back as it was): checked before any write.
            _require_fetched_intact(self.snapshot)
        if self.sample is not None:
            ctx.samples.start(self.snapshot)
        t = ctx.target
        before = tool.run_in_place(SnapshotRestore(
            self.snapshot, self.staging, t.name, t.initial_cluster, t.token, t.peer_urls,
            self.bump_revision, skip_hash_check=True))
        _compare_committed(restored, before.txid, self.revision, self.bump_revision or 0)
        sample = ctx.samples.take(self.snapshot, committed=restored) if self.sample is not None else None
        self._finish(ctx, sample)

    def _finish(self, ctx: RestoreContext, sample: list[KeyValue] | None) -> None:
        _own_tree(self.staging, ctx.journal.state.get("owner_uid"), ctx.journal.state.get("owner_gid"))
        os.chmod(self.staging, 0o700)
        if self.sample is not None and sample is not None:
            save_sample(self.sample, sample)


@dataclass(frozen=True)
class DropSnapshot(Step):
    """Remove the fetched snapshot once the restored data was compared with it: no later step
    reads it (the member is checked against the kept key sample), and removing a GB-sized file
    overlaps with the steps that follow instead of adding to the end."""

    snapshot: Path
    sample: Path | None = None  # the kept keys a VerifyMember checks, if one follows

    def describe(self) -> str:
        kept = "; the keys to check on the started member are kept beside it" if self.sample else ""
        return (f"remove the fetched snapshot {self.snapshot} while the next steps run (the restored data "
                f"was compared with it{kept})")

    def run(self, ctx: RestoreContext) -> None:
        if self.sample is not None and not self.sample.exists():
            return  # restore-data ran before keys were kept (an older lifeboat): the check samples the snapshot
        ctx.remove_meanwhile(self.snapshot)


@dataclass(frozen=True)
class BumpRevision(Step):
    """lifeboat's own revision bump, for restore tools without --bump-revision/--mark-compacted."""

    staging: Path
    amount: int
    revision: int

    @property
    def db(self) -> Path:
        return self.staging / "member" / "snap" / "db"

    def describe(self) -> str:
        return (f"raise the restored db's revision {self.revision} by {self.amount} to "
                f"{self.revision + self.amount} and schedule a compaction there (what etcd 3.5.10+'s "
                f"--bump-revision --mark-compacted writes), committed in place in {self.db} and checked")

    def run(self, ctx: RestoreContext) -> None:
        result = bump_restored_db(self.db, self.amount)
        if result.old_revision != self.revision:
            raise IntegrityError(f"the restored db's revision is {result.old_revision}, not {self.revision}; "
                                 "the old data is moved aside; report this")
        ctx.say(f"revision bumped by lifeboat: {result.old_revision} -> {result.new_revision}, "
                "compaction scheduled there")


def _compare_keyspace(snapshot: Path, restored: Path, revision: int, want: KeyspaceDigest | None,
                      bump: int = 0) -> None:
    """Raise unless the restored db's bucket ``key`` holds the snapshot's rows up to ``revision``
    (and, with a ``bump``, one more row at ``revision + bump``).

    ``want`` is the snapshot's digest when it was already read; without one the pages are
    compared first and the rows only when the pages differ.
    """
    if want is None and not bump and keeps_snapshot_pages(snapshot, restored):
        newest = newest_revision(restored)
        same, detail = True, f"its newest revision is {newest}"
    elif want is None and bump and keeps_snapshot_rows(snapshot, restored, revision):
        newest, bumped = newest_revision(snapshot), newest_revision(restored)
        same, detail = bumped == revision + bump, f"its rows to revision {newest} and a bump to {bumped}"
    else:
        want = want or keyspace_digest(snapshot, revision)
        got = keyspace_digest(restored, revision)
        same, newest = got == want, got.last_revision
        detail = f"{got.rows} rows to revision {newest}, snapshot {want.rows} to {want.last_revision}"
    if not same or newest != revision:
        raise IntegrityError(
            f"the restored db's keyspace differs from the snapshot's ({detail}); the old data is "
            "untouched or moved aside; report this"
        )


def _compare_committed(db: Path, snapshot_txid: int, revision: int, bump: int) -> None:
    """Raise unless ``db``, committed into its snapshot's file, holds the rows the snapshot's tree
    (transaction ``snapshot_txid``, still in the file) holds up to ``revision``, and (with a
    ``bump``) one more at ``revision + bump``."""
    difference = committed_keyspace_difference(db, snapshot_txid, revision, bump)
    if difference is not None:
        raise IntegrityError(
            f"the restored db's keyspace differs from the snapshot's ({difference}); the old data is "
            "untouched or moved aside; report this"
        )


def _checked_keyspace(snapshot: Path, revision: int, check: bool, digest: bool) -> KeyspaceDigest | None:
    if check:
        _require_fetched_intact(snapshot)
    return keyspace_digest(snapshot, revision) if digest else None


def _require_fetched_intact(snapshot: Path) -> None:
    """IntegrityError unless ``snapshot``, fetched (and replayed) by an earlier run of this restore
    that was interrupted, still matches its sha256 trailer, or (replayed by lifeboat's own
    writer's restore) the base's trailer and the replay's record.

    By then the node's member is stopped and its data dir moved aside, and resuming cannot fetch
    again: the error says how to get back to a restore that does.
    """
    replayed = replayed_into(snapshot)
    if replayed is not None:
        difference = replayed_difference(snapshot, replayed)
    else:
        found = check_trailer(snapshot)
        difference = (None if found.present and found.matches else
                      "its sha256 trailer is gone" if not found.present else "its sha256 no longer matches its trailer")
    if difference is not None:
        raise IntegrityError(
            f"{snapshot} changed on disk since an earlier run of this restore fetched and checked it "
            f"({difference}); "
            "nothing was restored from it and the node's old data dir (if any) stays moved aside; put it back with "
            "'lifeboat restore --rollback', then run the restore again to fetch and check the backup afresh"
        )




def _own_tree(top: Path, uid: int | None, gid: int | None) -> None:
    if os.geteuid() != 0 or uid is None or gid is None:
        return
    for directory, dirnames, filenames in os.walk(top):
        os.lchown(directory, uid, gid)
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(directory, name), uid, gid)


@dataclass(frozen=True)
class PutInPlace(Step):
    staging: Path
    data_dir: Path

    def describe(self) -> str:
        return f"rename {self.staging} to {self.data_dir}"

    def run(self, ctx: RestoreContext) -> None:
        if not self.staging.exists() and (self.data_dir / "member").is_dir():
            return  # renamed before a crash
        _rename(self.staging, self.data_dir, "exists again; something recreated it. Move it away, then re-run")


@dataclass(frozen=True)
class RestoreFiles(Step):
    archive: Path
    count: int
    stamp: str

    def describe(self) -> str:
        return (f"restore {self.count} control-plane files from {self.archive}, moving each existing one that "
                f"differs aside to <path>.lifeboat-moved-{self.stamp} (.<name>.lifeboat-moved-{self.stamp} in "
                "the kubelet's manifests dir)")

    def run(self, ctx: RestoreContext) -> None:
        install_archive(self.archive, ctx.root, self.stamp, ctx.supervisor.restored_file_destination)


@dataclass(frozen=True)
class VerifyMember(Step):
    revision: int
    snapshot: Path
    sample: Path  # the snapshot's keys to check, kept by RestoreData
    compacted_before: int | None = None  # with a bump: the snapshot's revision

    def describe(self) -> str:
        bumped = (f"; a watch from revision {served_revision(self.compacted_before)} is refused as compacted"
                  if self.compacted_before is not None else "")
        return (f"wait for the member to serve reads; check its revision is at least {self.revision}{bumped} "
                "and a sample of keys matches the snapshot")

    def run(self, ctx: RestoreContext) -> None:
        # The sample was read while the restore tool worked and kept (RestoreData); a restore
        # journaled before samples were kept reads it from the snapshot now, while etcd starts.
        with ThreadPoolExecutor(1, thread_name_prefix="lifeboat-sample") as pool:
            sampling = pool.submit(self._sample, ctx)
            served = _wait_serving(ctx)
            sample = finished(sampling)
        if served < self.revision:
            raise IntegrityError(f"the restored member serves revision {served}, below the expected "
                                 f"{self.revision}; roll back with 'lifeboat restore --rollback'")
        refused = ""
        if self.compacted_before is not None:
            before = served_revision(self.compacted_before)
            if not ctx.member.watch_refused_as_compacted(before):
                raise IntegrityError(
                    f"the restored member accepts a watch from revision {before}, before the "
                    "bump, so clients could miss changes; roll back with 'lifeboat restore --rollback'")
            refused = f"; a watch from revision {before} is refused as compacted"
        # A bump only adds a row above the snapshot's revision: every key keeps its revisions.
        for want, got in zip(sample, ctx.member.get_many([kv.key for kv in sample]), strict=True):
            if got != want:
                raise IntegrityError(f"the restored member's key {want.key!r} differs from the snapshot's; "
                                     "roll back with 'lifeboat restore --rollback'")
        ctx.say(f"member serves revision {served}{refused}; {len(sample)} sampled keys match the snapshot")

    def _sample(self, ctx: RestoreContext) -> list[KeyValue]:
        kept = load_sample(self.sample)
        return kept if kept is not None else ctx.samples.take(self.snapshot)


def _wait_serving(ctx: RestoreContext) -> int:
    last: list[LifeboatError] = []

    def serving() -> int | None:
        try:
            return ctx.member.revision()
        except LifeboatError as exc:
            last[:] = [exc]
            return None

    revision = wait_for(ctx.clock, serving, ctx.health_timeout, ctx.probe_interval)
    if revision is None:
        raise OperationFailed(
            f"the restored member did not serve a read within {ctx.health_timeout:.0f}s ({last[0]}); "
            "in a multi-member restore, every member must be restored and started"
        )
    return revision


@dataclass(frozen=True)
class CleanUp(Step):
    work: Path
    moved_aside: Path
    # A rollback's: what it keeps is the restored data dir it set aside, and the old one back in place.
    rollback: bool = False

    def describe(self) -> str:
        kept = "no data dir of the node is touched" if self.rollback else f"{self.moved_aside} stays"
        return (f"remove lifeboat's work dir {self.work} (the download, the kept keys, any restored data not "
                f"put in place); {kept}")

    def run(self, ctx: RestoreContext) -> None:
        ctx.removed()
        shutil.rmtree(self.work, ignore_errors=True)


@dataclass(frozen=True)
class OldDataThere(PreparingStep):
    """A rollback's first step: the moved-aside data dir must still be there before anything is
    stopped or the restored data dir moved aside, or the node would end with neither in place."""

    moved_aside: Path
    data_dir: Path

    def describe(self) -> str:
        return f"check that the moved-aside {self.moved_aside} is still there to put back"

    def check(self, ctx: RestoreContext) -> None:
        if "set-restored-aside" in ctx.journal.rollback_done:
            return  # journaled by a lifeboat without this step: put-back says where the restored data went
        if not self.moved_aside.is_dir():
            raise OperationFailed(f"{self.moved_aside} is gone; nothing to roll back to: nothing was stopped or "
                                  f"moved, {self.data_dir} keeps the restored data")

    def run(self, ctx: RestoreContext) -> None:
        pass


@dataclass(frozen=True)
class PutBack(Step):
    moved_aside: Path
    data_dir: Path
    # The restore had not moved the data dir: only a crash in the middle of that rename left
    # one there to put back.
    only_if_there: bool = False

    def describe(self) -> str:
        if self.only_if_there:
            return (f"rename {self.moved_aside} back to {self.data_dir} if a crash in the middle of the move left it "
                    "(usually nothing is there: the data dir was not moved)")
        return f"rename the moved-aside {self.moved_aside} back to {self.data_dir}"

    def check(self, ctx: RestoreContext) -> None:
        if not self.moved_aside.is_dir() and not (self.data_dir / "member").is_dir():
            restored = ctx.journal.state.get("restored_set_aside")
            raise OperationFailed(f"{self.moved_aside} is gone; nothing to roll back to"
                                  + (f"; the restored data dir is at {restored}: rename it back to {self.data_dir} "
                                     "to run etcd on it" if restored else ""))

    def run(self, ctx: RestoreContext) -> None:
        if not self.moved_aside.exists():
            return  # renamed before a crash
        _rename(self.moved_aside, self.data_dir, "exists; move it away, then re-run the rollback")


def _rename(source: Path, destination: Path, occupied: str) -> None:
    """Rename ``source`` to ``destination`` for good (its directory synced); refused with
    "<destination> <occupied>" when something is there: a rename would replace it."""
    try:
        move_durably(source, destination)
    except FileExistsError:
        raise OperationFailed(f"{destination} {occupied}") from None



def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
